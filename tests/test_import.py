"""``statsworker import``: real CSV files give the totals counted from the CSV, bad rows are
reported by line, and importing a file again changes nothing."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from events.fields import slugify
from stats import keys
from stats.settings import Settings
from tests.conftest import REAL_REDIS_URL, Backend, data_file
from worker import cli, context
from worker.connections import MEMORY_URL, Connections
from worker.importer import COUNT_COLUMNS, ImportReport, import_file
from worker.metrics import read_counters
from worker.runner import failed_jobs, run_worker

AS_OF = dt.date(2100, 1, 1)
"""Reads as of a date after every row of the data sets."""


def make_conns(backend: Backend, tmp_path: Path) -> Connections:
    """Connections on the test's backend, with its own prefix, queue and event log."""
    settings = Settings(
        redis_url=MEMORY_URL if backend.name == "fakeredis" else REAL_REDIS_URL,
        queue=backend.queue,
        key_prefix=backend.prefix,
        database_url=f"sqlite:///{tmp_path / 'events.db'}",
    )
    return Connections(settings, backend.client, backend.raw)


def import_and_apply(
    conns: Connections, path: Path, kind: str, vertical: str | None = None
) -> ImportReport:
    """Import a file, then drain the queue with an in-process worker."""
    report = import_file(conns, path, kind, vertical, Console(file=io.StringIO()))
    run_worker(conns, burst=True, with_scheduler=False)
    assert failed_jobs(conns) == []
    assert conns.queue.count == 0
    return report


def state_snapshot(conns: Connections) -> dict[str, Any]:
    """Every state key under the prefix with its content (the operations counters aside)."""
    client, prefix = conns.state, conns.settings.key_prefix
    names = sorted(
        k
        for k in client.scan_iter(keys.all_keys_pattern(prefix), count=5000)
        if k != keys.metrics_key(prefix)
    )
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.type(name)
    readers = {
        "hash": pipe.hgetall,
        "zset": lambda k: pipe.zrange(k, 0, -1, withscores=True),
        "set": pipe.smembers,
        "string": pipe.get,
    }
    for name, kind in zip(names, pipe.execute(), strict=True):
        readers[kind](name)
    return dict(zip(names, pipe.execute(), strict=True))


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file; each record sits on one line here (checked)."""
    with path.open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    with path.open(encoding="utf-8", newline="") as stream:
        assert sum(1 for _ in stream) == len(rows) + 1, "a record spans several lines"
    return rows


def check_setlist_totals(conns: Connections, path: Path, vertical: str) -> None:
    """Band totals and the most played song's figures equal counts made from the CSV."""
    rows = [r for r in csv_rows(path) if r["song_title"].strip()]
    shows = {(r["show_id"], r["show_date"]) for r in rows}
    plays: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        plays[slugify(r["song_title"])].append(r["show_date"])
    stats = conns.setlists.stats(vertical, AS_OF)
    assert stats.total_shows == len(shows)
    assert stats.total_performances == len(rows)
    assert stats.unique_songs_played == len(plays)
    assert stats.avg_songs_per_show == round(len(rows) / len(shows), 1)
    assert stats.first_show == dt.date.fromisoformat(min(r["show_date"] for r in rows))
    assert stats.last_show == dt.date.fromisoformat(max(r["show_date"] for r in rows))
    top = max(plays, key=lambda s: (len(plays[s]), s))
    figures = conns.setlists.song(vertical, top, AS_OF)
    assert figures is not None
    assert figures.total_plays == len(plays[top])
    assert figures.first_played == dt.date.fromisoformat(min(plays[top]))
    assert figures.last_played == dt.date.fromisoformat(max(plays[top]))
    trends = conns.setlists.trends(vertical, AS_OF, "month")
    assert sum(t.performances for t in trends.trends) == len(rows)
    assert sum(t.shows for t in trends.trends) == len(shows)


def test_goose_totals_bad_rows_and_reimport(backend: Backend, tmp_path: Path) -> None:
    conns = make_conns(backend, tmp_path)
    path = data_file("goose_setlists.csv")
    rows = csv_rows(path)
    untitled = [n for n, r in enumerate(rows, start=2) if not r["song_title"].strip()]
    assert len(untitled) == 66

    report = import_and_apply(conns, path, "setlists", "goose")

    assert [str(e) for e in report.skipped] == [f"line {n}: song_title is empty" for n in untitled]
    assert report.rows == len(rows)
    assert report.published == len(rows) - 66
    check_setlist_totals(conns, path, "goose")

    before = state_snapshot(conns)
    again = import_and_apply(conns, path, "setlists", "goose")
    assert again.published == report.published
    assert state_snapshot(conns) == before


def test_grateful_dead_totals(real_backend: Backend, tmp_path: Path) -> None:
    conns = make_conns(real_backend, tmp_path)
    path = data_file("grateful_dead_setlists.csv")
    report = import_and_apply(conns, path, "setlists", "grateful-dead")
    assert report.skipped == []
    check_setlist_totals(conns, path, "grateful-dead")
    # Two plays of one song in one show count twice (the "Playing In The Band" sandwiches).
    pitb = [r for r in csv_rows(path) if slugify(r["song_title"]) == "playing-in-the-band"]
    figures = conns.setlists.song("grateful-dead", "playing-in-the-band", AS_OF)
    assert figures is not None and figures.total_plays == len(pitb)
    assert len({r["show_id"] for r in pitb}) < len(pitb)


def expected_videos(path: Path) -> tuple[dict[str, dict[str, Any]], list[int], set[str]]:
    """Per creator the overview counted from the CSV, the lines to be skipped, and the
    creators with two snapshots of one video on one date.

    A video's figures come from its latest snapshot; two snapshots on one date are
    ordered by their counts (views first), as the importer documents.
    """
    latest: dict[tuple[str, str], tuple[Any, ...]] = {}
    posted: dict[tuple[str, str], str] = {}
    seen: set[tuple[str, str, str]] = set()
    twice: set[str] = set()
    skipped = []
    for n, row in enumerate(csv_rows(path), start=2):
        creator = slugify(row["channel_or_creator"])
        if not creator:
            skipped.append(n)
            continue
        key = (creator, row["video_id"])
        if (*key, row["snapshot_date"]) in seen:
            twice.add(creator)
        seen.add((*key, row["snapshot_date"]))
        counts = tuple(int(row[c] or 0) for c in COUNT_COLUMNS)
        candidate = (row["snapshot_date"], counts)
        if key not in latest or candidate > latest[key]:
            latest[key] = candidate
        posted[key] = row["date_posted"]
    out: dict[str, dict[str, Any]] = {}
    for (creator, video_id), (_, counts) in latest.items():
        views, likes, comments, shares, bookmarks, _followers = counts
        o = out.setdefault(creator, defaultdict(int, rates=[], dates=[]))
        o["total_videos"] += 1
        for name, value in zip(COUNT_COLUMNS, counts, strict=True):
            o[f"total_{name}"] += value
        o["rates"].append((likes + comments + shares + bookmarks) / views * 100 if views else 0)
        o["dates"].append(posted[(creator, video_id)])
    return out, skipped, twice


def test_youtube_totals_bad_rows_and_reimport(real_backend: Backend, tmp_path: Path) -> None:
    conns = make_conns(real_backend, tmp_path)
    path = data_file("youtube_trending_snapshots.csv")
    expected, skipped_lines, twice = expected_videos(path)
    assert skipped_lines, "the data set has creators whose name has no ASCII letter or digit"
    assert twice, "the data set has videos trending in two countries on one date"

    report = import_and_apply(conns, path, "videos")

    assert [e.where for e in report.skipped] == [f"line {n}" for n in skipped_lines]
    assert all("channel_or_creator" in e.reason for e in report.skipped)
    assert conns.videos.creators() == sorted(expected)
    # Every creator with a same-day pair, the ten biggest and a spread of the others
    # (one read per creator: all 1,800 would only repeat these).
    biggest = sorted(expected, key=lambda c: (-expected[c]["total_videos"], c))[:10]
    checked = twice | set(biggest) | set(sorted(expected)[::60])
    for creator in sorted(checked):
        want = expected[creator]
        got = conns.videos.overview(creator).metrics
        for name in ("total_videos", *(f"total_{c}" for c in COUNT_COLUMNS)):
            assert getattr(got, name) == want[name], (creator, name)
        assert got.avg_engagement_rate == pytest.approx(
            sum(want["rates"]) / len(want["rates"]), abs=1e-6
        )
        assert got.date_range == (
            dt.date.fromisoformat(min(want["dates"])),
            dt.date.fromisoformat(max(want["dates"])),
        )

    before = state_snapshot(conns)
    import_and_apply(conns, path, "videos")
    assert state_snapshot(conns) == before


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def applied_counts(
    conns: Connections, vertical: str, *songs: str
) -> tuple[int, int, list[int | None]]:
    """Shows and performances of ``vertical`` as of :data:`AS_OF`, and each song's plays."""
    stats = conns.setlists.stats(vertical, AS_OF)
    plays = [getattr(conns.setlists.song(vertical, s, AS_OF), "total_plays", None) for s in songs]
    return stats.total_shows, stats.total_performances, plays


@pytest.fixture
def fake_conns(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Connections]:
    """Connections the command line uses (``context.get()``) for this test only."""
    conns = make_conns(backend, tmp_path)
    monkeypatch.setattr(context, "_current", conns)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield conns
    finally:  # the command line configures logging for the process; put it back
        root.handlers[:], root.level = handlers, level


@pytest.mark.parametrize("backend", ["fakeredis"], indirect=True)
def test_command_reports_bad_rows_by_line(
    fake_conns: Connections, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path / "small.csv",
        "show_id,show_date,song_title,set_name\n"
        "s1,2024-05-01,Tweezer,set1\n"
        "s1,,Ghost,set1\n"
        "s1,2024-05-01,,set1\n"
        "s1,2024-05-01,???,set1\n"
        's2,2024-13-01,"Harry\nHood",set1\n'
        "s2,2024-05-02,Tweezer,set1\n"
        "s2,2024-05-02,Tweezer,set2\n",
    )
    assert cli.main(["import", "setlists", str(path), "--vertical", "phish"]) == 1
    err = capsys.readouterr().err
    assert "line 3: show_date is empty" in err
    assert "line 4: song_title is empty" in err
    assert "line 5: song_title '???' has no ASCII letter or digit" in err
    assert "line 6: show_date: '2024-13-01' is not a real date" in err
    assert "4 row(s) skipped" in err
    counters = read_counters(fake_conns.state, fake_conns.settings.key_prefix)
    assert counters.get("rejected") == "4"  # as publish counts its bad lines
    run_worker(fake_conns, burst=True, with_scheduler=False)
    assert applied_counts(fake_conns, "phish", "tweezer") == (2, 3, [3])


@pytest.mark.parametrize("backend", ["fakeredis"], indirect=True)
def test_a_row_that_is_not_utf8_or_not_dated_yyyy_mm_dd_is_skipped_and_the_rest_imported(
    fake_conns: Connections, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setlists = tmp_path / "latin1.csv"
    setlists.write_bytes(
        b"show_id,show_date,song_title\n"
        b"s1,2024-05-01,Caf\xe9\n"  # Latin-1
        b"s1,2024-05-01,Tweezer\n"
        b"s2,2024-W18-4,Ghost\n"  # an ISO week date, which date.fromisoformat reads
        b"s2,20240502,Ghost\n"
        b"s3,2024-05-03,Ghost\n"
    )
    assert cli.main(["import", "setlists", str(setlists), "--vertical", "phish"]) == 1
    err = capsys.readouterr().err
    assert "line 2: song_title: not UTF-8 text" in err
    assert "line 4: show_date: '2024-W18-4' is not a real date written YYYY-MM-DD" in err
    assert "line 5: show_date: '20240502' is not a real date written YYYY-MM-DD" in err
    assert "3 row(s) skipped" in err and "Traceback" not in err
    videos = tmp_path / "videos.csv"
    videos.write_bytes(
        b"video_id,channel_or_creator,date_posted,views,likes,comments,shares,bookmarks,"
        b"new_followers,snapshot_date,country\n"
        b"v1,Caf\xe9 Ana,2024-03-01,1,0,0,0,0,0,2024-03-02,FR\n"
        b"v2,Chef Ana,2024-03-01,5,1,0,0,0,0,2024-03-02,Cura\xe7ao\n"  # a column not read
    )
    assert cli.main(["import", "videos", str(videos)]) == 1
    err = capsys.readouterr().err
    assert "line 2: channel_or_creator: not UTF-8 text" in err and "1 row(s) skipped" in err
    run_worker(fake_conns, burst=True, with_scheduler=False)
    stats = fake_conns.setlists.stats("phish", AS_OF)
    assert (stats.total_shows, stats.total_performances) == (2, 2)
    assert fake_conns.videos.creators() == ["chef-ana"]
    assert fake_conns.videos.overview("chef-ana").metrics.total_videos == 1


@pytest.mark.parametrize("backend", ["fakeredis"], indirect=True)
def test_command_rejects_a_file_without_required_columns(
    fake_conns: Connections, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "cols.csv", "show_id,date,title\ns1,2024-05-01,Tweezer\n")
    assert cli.main(["import", "setlists", str(path), "--vertical", "phish"]) == 2
    assert "missing column(s): show_date, song_title" in capsys.readouterr().err
    assert cli.main(["import", "videos", str(tmp_path / "absent.csv")]) == 2
    assert fake_conns.queue.count == 0


@pytest.mark.parametrize("backend", ["fakeredis"], indirect=True)
def test_video_snapshots_posted_then_updated(
    fake_conns: Connections, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header = "video_id,channel_or_creator,date_posted,views,likes,comments,shares,bookmarks,"
    path = write(
        tmp_path / "videos.csv",
        header + "new_followers,snapshot_date,country\n"
        "v1,Chef Ana,2024-03-01,100,10,,,,,2024-03-02,US\n"
        "v1,Chef Ana,2024-03-01,500,40,5,,,,2024-03-04,US\n"
        "v1,Chef Ana,2024-03-01,500,41,5,,,,2024-03-04,FR\n"
        "v2,Chef Ana,2024-03-05,0,0,0,0,0,0,2024-03-05,US\n"
        "v3,Chef Ana,2024-03-05,-4,0,0,0,0,0,2024-03-05,US\n"
        "v4,,2024-03-05,1,0,0,0,0,0,2024-03-05,US\n"
        "v5,Chef Ana,,1,0,0,0,0,0,2024-03-05,US\n"
        f"{'v' * 201},Chef Ana,2024-03-05,1,0,0,0,0,0,2024-03-05,US\n"
        "v6,Chef Ana,2024-03-05,²,0,0,0,0,0,2024-03-05,US\n",
    )
    assert cli.main(["import", "videos", str(path)]) == 1
    err = capsys.readouterr().err
    assert "line 6: views: '-4' is not a whole number" in err
    assert "line 7: channel_or_creator is empty" in err
    assert "line 8: date_posted is empty" in err
    assert "line 9: video_id: String should have at most 200 characters" in err
    assert "line 10: views: '²' is not a whole number" in err
    run_worker(fake_conns, burst=True, with_scheduler=False)
    m = fake_conns.videos.overview("chef-ana").metrics
    # v1's latest snapshot is the FR row (same views, more likes); v2 has no views at all.
    assert (m.total_videos, m.total_views, m.total_likes, m.total_comments) == (2, 500, 41, 5)
    assert m.avg_engagement_rate == pytest.approx((46 / 500 * 100 + 0) / 2, abs=1e-6)
    assert m.date_range == (dt.date(2024, 3, 1), dt.date(2024, 3, 5))


@pytest.mark.parametrize("backend", ["fakeredis"], indirect=True)
def test_songs_sharing_a_show_set_and_position_are_plays_and_long_show_ids_import(
    fake_conns: Connections, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_show = "s" * 200  # the longest show_id an event may carry
    path = write(
        tmp_path / "slots.csv",
        "show_id,show_date,song_title,set_name,position\n"
        "s1,2024-05-01,Tweezer,set1,1\n"
        "s1,2024-05-01,Ghost,set1,1\n"  # another song in the same slot: a second play
        "s1,2024-05-01,Tweezer,set1,1\n"  # the first row again: the same play
        "s1,2024-05-01,Sand,set1,1\n"
        f"{long_show},2024-05-02,Ghost,set1,1\n",
    )
    for _ in range(2):  # a second import of the same file changes nothing
        assert cli.main(["import", "setlists", str(path), "--vertical", "phish"]) == 0
        assert "imported 5 event(s) from 5 row(s)" in capsys.readouterr().err
        run_worker(fake_conns, burst=True, with_scheduler=False)
        assert applied_counts(fake_conns, "phish", "tweezer", "sand") == (2, 4, [1, 1])


@pytest.mark.parametrize("backend", ["fakeredis"], indirect=True)
def test_a_video_file_without_a_count_column_says_so_and_counts_it_as_0(
    fake_conns: Connections, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path / "typo.csv",
        "video_id,channel_or_creator,date_posted,Views,likes,snapshot_date\n"
        "b1,Chef Ana,2017-11-12,5000,10,2017-11-14\n",
    )
    assert cli.main(["import", "videos", str(path)]) == 0
    err = capsys.readouterr().err
    missing = "views, comments, shares, bookmarks, new_followers"
    assert f"typo.csv: no column(s) {missing}: counted as 0" in err
    run_worker(fake_conns, burst=True, with_scheduler=False)
    m = fake_conns.videos.overview("chef-ana").metrics
    assert (m.total_videos, m.total_views, m.total_likes) == (1, 0, 10)
