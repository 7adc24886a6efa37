"""``statsworker demo``: the whole pipeline on the embedded default, with no network at all,
prints real figures, and they are what the HTTP routes answer on the same state."""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from api_stub.app import create_app
from events.schemas import PerformanceRecorded, PerformanceRetracted, VideoDeleted, VideoPosted
from worker import cli
from worker.demo import DemoResult, run_demo
from worker.demo_report import chart, render
from worker.generator import DataSet, generate


class Run(NamedTuple):
    """A demo run: its result, the report as printed and the progress as drawn."""

    result: DemoResult
    report: str
    progress: str


WIDTH = 200
"""Wide enough that no title is cut and the report's tables sit side by side."""


def _no_network(*args: Any, **kwargs: Any) -> Any:
    raise OSError("the network is off in this test")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One demo run on the generated data, with every socket connection refused."""
    patch = pytest.MonkeyPatch()
    for name in ("connect", "connect_ex"):
        patch.setattr(socket.socket, name, _no_network)
    patch.setattr(socket, "create_connection", _no_network)
    try:
        workdir = tmp_path_factory.mktemp("demo")
        progress = io.StringIO()
        console = Console(file=progress, force_terminal=True, width=100)
        result = run_demo(workdir, progress_console=console)
        out = Console(record=True, width=WIDTH, color_system=None)
        render(result, out)
    finally:
        patch.undo()
    yield Run(result, out.export_text(), progress.getvalue())


@pytest.fixture(scope="module")
def data() -> DataSet:
    return generate()


@pytest.fixture(scope="module")
def client(demo: Run) -> Iterator[TestClient]:
    with TestClient(create_app(demo.result.conns)) as c:
        yield c


def lines_with(text: str, *needles: str) -> list[str]:
    """The report lines that hold every needle."""
    return [line for line in text.splitlines() if all(n in line for n in needles)]


def test_pipeline_ran_on_the_generated_data(demo: Run, data: DataSet) -> None:
    result = demo.result
    assert result.published == len(data.events)
    assert result.failed_jobs == 0
    assert result.conns.queue.count == 0
    assert result.today == dt.date(2025, 1, 1) == data.today
    assert [b.slug for b in result.bands] == [
        "driftwood-parade",
        "the-lantern-assembly",
        "copper-kites",
    ]
    assert [c.slug for c in result.creators] == ["trailside-kitchen", "pocket-synth-lab"]
    # Totals against a count made here from the events themselves.
    for band in result.bands:
        recorded = [
            e for e in data.events if isinstance(e, PerformanceRecorded) and e.vertical == band.slug
        ]
        retracted = {
            e.performance_id
            for e in data.events
            if isinstance(e, PerformanceRetracted) and e.vertical == band.slug
        }
        present = [e for e in recorded if e.performance_id not in retracted]
        assert band.stats.total_performances == len(present) > 1000
        assert band.stats.total_shows == len({(e.show_id, e.show_date) for e in present})
    for creator in result.creators:
        posted = {
            e.video_id
            for e in data.events
            if isinstance(e, VideoPosted) and e.creator == creator.slug
        }
        deleted = {
            e.video_id
            for e in data.events
            if isinstance(e, VideoDeleted) and e.creator == creator.slug
        }
        assert creator.overview.metrics.total_videos == len(posted - deleted) > 10


def test_progress_is_shown_while_it_works(demo: Run) -> None:
    for step in ("reading data", "publishing", "applying (worker)", "reading results"):
        assert step in demo.progress
    assert f"{demo.result.jobs}/{demo.result.jobs}" in demo.progress


def test_generated_data_has_what_fans_look_for(demo: Run, data: DataSet) -> None:
    result = demo.result
    assert data.events == generate().events, "the same seed gives the same events"
    assert generate(seed=7).events[:100] != data.events[:100]
    plays = Counter(
        (e.vertical, e.show_id, e.song) for e in data.events if isinstance(e, PerformanceRecorded)
    )
    assert any(n == 2 for n in plays.values()), "a song played twice in one show"
    for band in result.bands:
        s = band.stats
        assert s.first_show is not None and s.last_show is not None
        assert (s.last_show - s.first_show).days > 5 * 365
        assert band.hottest and band.hottest[0].velocity_score > 0
        assert band.overdue and band.overdue[0].days_since_played > 180
        assert band.bustouts and band.bustouts[0].gap_days >= 180
        assert band.debuts
    for creator in result.creators:
        series = creator.series.data_points
        assert len(series) > 5 and max(p.views for p in series) > 0
        assert creator.hashtags.top_hashtags


def test_report_shows_what_the_routes_answer(demo: Run, client: TestClient) -> None:
    result, text = demo.result, demo.report
    flat = " ".join(text.split())  # for the lines the report may wrap
    for band in result.bands:
        v = band.slug
        stats = client.get(f"/analytics/stats/{v}").json()
        assert stats == band.stats.model_dump(mode="json")
        row = lines_with(text, band.name, stats["last_show"])
        assert row, f"no totals row for {band.name}"
        numbers = re.findall(r"[\d,.]+", row[0].split(band.name, 1)[1])
        assert numbers[:4] == [
            f"{stats['total_shows']:,}",
            f"{stats['unique_songs_played']:,}",
            f"{stats['total_performances']:,}",
            f"{stats['avg_songs_per_show']:.1f}",
        ]

        hottest = client.get(f"/analytics/velocity/{v}", params={"limit": 5}).json()
        assert hottest == [r.model_dump(mode="json") for r in band.hottest]
        for r in hottest:
            assert lines_with(text, f"{r['song_title']} ", f" {r['velocity_score']}")

        overdue = client.get(f"/analytics/gaps/{v}", params={"limit": 5, "min_plays": 5}).json()
        assert overdue == [r.model_dump(mode="json") for r in band.overdue]
        for r in overdue:
            assert lines_with(
                text, r["song_title"], r["last_played"], f"{r['days_since_played']:,}"
            )

        bustouts = client.get(f"/analytics/bustouts/{v}").json()["bustouts"][:5]
        assert bustouts == [b.model_dump(mode="json") for b in band.bustouts]
        for b in bustouts:
            assert lines_with(text, b["song_title"], b["bustout_date"], f"{b['gap_days']:,}")

        debuts = client.get(f"/analytics/debut-songs/{v}").json()["debuts"][:5]
        assert debuts == [d.model_dump(mode="json") for d in band.debuts]
        for d in debuts:
            assert lines_with(text, d["song_title"], d["debut_date"])

    for creator in result.creators:
        c = creator.slug
        metrics = client.get(f"/analytics/insights/{c}/overview").json()["metrics"]
        assert metrics == creator.overview.metrics.model_dump(mode="json")
        assert lines_with(
            text,
            f"{metrics['total_videos']:,} videos",
            f"{metrics['total_views']:,} views",
            f"{metrics['avg_engagement_rate']:.2f} %",
        )
        top = client.get(f"/analytics/insights/{c}/hashtags", params={"limit": 5}).json()
        assert top == creator.hashtags.model_dump(mode="json")
        for h in top["top_hashtags"]:
            assert f"#{h['hashtag']} {h['total_views']:,} views" in flat
        # The chart covers the 60 days that end on the creator's latest video.
        end = dt.date.fromisoformat(metrics["date_range"][1])
        start = end - dt.timedelta(days=59)
        assert creator.chart_start == start
        series = client.get(
            f"/analytics/insights/{c}/time-series", params={"start": str(start), "end": str(end)}
        ).json()
        assert series == creator.series.model_dump(mode="json")
        highest = max(p["views"] for p in series["data_points"])
        assert lines_with(text, f"{start} to {end}", f"highest {highest:,}")


def test_chart_draws_each_value_as_a_column() -> None:
    rows = chart([0, 8, 4, 16], height=2)
    assert rows == ["   █", " █▄█"]
    assert chart([], height=3) == ["", "", ""]


@pytest.fixture
def quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:  # the command line configures logging for the process; put it back
        root.handlers[:], root.level = handlers, level


def test_command_runs_on_csv_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], quiet_root_logger: None
) -> None:
    setlists = tmp_path / "shows.csv"
    setlists.write_text(
        "show_id,show_date,song_title,set_name,position\n"
        "a,2024-05-01,Tweezer,set1,1\n"
        "a,2024-05-01,Ghost,set1,2\n"
        "b,2024-11-20,Tweezer,set1,1\n"
        "b,2024-11-20,,set1,2\n",
        encoding="utf-8",
    )
    videos = tmp_path / "videos.csv"
    videos.write_text(
        "video_id,channel_or_creator,date_posted,views,likes,comments,shares,bookmarks,"
        "new_followers,snapshot_date\n"
        "v1,Chef Ana,2024-11-10,100,10,1,,,,2024-11-11\n"
        "v1,Chef Ana,2024-11-10,900,50,9,,,,2024-11-15\n",
        encoding="utf-8",
    )
    argv = ["demo", "--setlists", str(setlists), "--vertical", "phish", "--videos", str(videos)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "2024-11-21" in out  # the day after the last show
    assert f"1 row(s) of {setlists} skipped, first: line 5: song_title is empty" in out
    assert f"of {videos} skipped" not in out
    assert lines_with(out, "phish", "2", "3", "2024-05-01", "2024-11-20")
    assert "1 videos · 900 views · 50 likes" in out
    assert cli.main(["demo", "--setlists", str(setlists)]) == 2
    assert "--setlists and --vertical go together" in capsys.readouterr().err
