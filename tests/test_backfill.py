"""``statsworker backfill --from-db``: the two site schemas (``tests/fixtures``) loaded with
real rows from ../shared/data give the state the same data gives when published as
events; unmappable rows are reported, and a second run changes nothing."""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from events.fields import slugify
from events.schemas import Event, parse_event
from stats import keys
from tests.conftest import Backend, data_file
from tests.log_support import (
    LOG_DATABASES,
    TODAY,
    answers,
    as_current,
    log_database,
    make_conns,
    postgres_schema,
)
from worker import cli, publishing
from worker.connections import Connections
from worker.runner import failed_jobs, run_worker

FIXTURES = Path(__file__).parent / "fixtures"
COUNTS = ("views", "likes", "comments", "shares", "bookmarks", "new_followers")


@pytest.fixture(params=LOG_DATABASES)
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated event log on SQLite and on PostgreSQL."""
    yield from log_database(request.param, tmp_path)


# -- the site database, loaded from the real data sets ------------------------------


def goose_rows(limit: int | None = None) -> list[dict[str, str]]:
    with data_file("goose_setlists.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))[:limit]


def video_snapshots(limit: int | None = None) -> dict[tuple[str, str], list[dict[str, str]]]:
    """Snapshots per (channel, video_id), by date; one per date (the most viewed), and
    without the few videos that trended under two channel names."""
    with data_file("youtube_trending_snapshots.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:limit]
    channels: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        channels[row["video_id"]].add(row["channel_or_creator"])
    per_day: dict[tuple[str, str], dict[str, dict[str, str]]] = defaultdict(dict)
    for row in rows:
        if len(channels[row["video_id"]]) > 1:
            continue
        days = per_day[(row["channel_or_creator"], row["video_id"])]
        kept = days.get(row["snapshot_date"])
        if kept is None or int(row["views"]) > int(kept["views"]):
            days[row["snapshot_date"]] = row
    return {video: [days[d] for d in sorted(days)] for video, days in per_day.items()}


def _statements(name: str) -> list[str]:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def load_site(
    url: str, goose: list[dict[str, str]], videos: dict[Any, list[dict[str, str]]]
) -> None:
    """Create both fixture schemas at ``url`` and fill them with the rows given."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for name in ("setlist_site.sql", "creator_site.sql"):
                for statement in _statements(name):
                    conn.execute(sa.text(statement))
            conn.execute(sa.text("INSERT INTO bands (id, name) VALUES (1, 'Goose')"))
            songs = {r["song_id"]: r["song_title"] or None for r in goose}
            conn.execute(
                sa.text("INSERT INTO songs (id, band_id, title) VALUES (:id, 1, :title)"),
                [{"id": int(k), "title": v} for k, v in songs.items()],
            )
            shows = {r["show_id"]: r for r in goose}
            conn.execute(
                sa.text(
                    "INSERT INTO shows (id, band_id, show_date, venue) "
                    "VALUES (:id, 1, :show_date, :venue)"
                ),
                [
                    {"id": int(k), "show_date": dt.date.fromisoformat(r["show_date"]),
                     "venue": r["venue"]}
                    for k, r in shows.items()
                ],
            )  # fmt: skip
            conn.execute(
                sa.text(
                    "INSERT INTO performances (id, show_id, song_id, set_name, position) "
                    "VALUES (:id, :show_id, :song_id, :set_name, :position)"
                ),
                [
                    {"id": i, "show_id": int(r["show_id"]), "song_id": int(r["song_id"]),
                     "set_name": r["set_name"], "position": int(r["position"])}
                    for i, r in enumerate(goose, start=1)
                ],
            )  # fmt: skip
            creators = {channel: i for i, channel in enumerate(sorted({c for c, _ in videos}), 1)}
            conn.execute(
                sa.text("INSERT INTO creators (id, name) VALUES (:id, :name)"),
                [{"id": i, "name": name} for name, i in creators.items()],
            )
            rows = []
            for n, ((channel, vid), snaps) in enumerate(sorted(videos.items()), start=1):
                last = snaps[-1]
                rows.append(
                    {
                        "id": n,
                        "creator_id": creators[channel],
                        "platform_id": vid,
                        "title": last["title"],
                        "date_posted": dt.date.fromisoformat(last["date_posted"]),
                        **{c: int(last[c]) if last[c] else None for c in COUNTS},
                        "updated_at": dt.datetime.fromisoformat(last["snapshot_date"]),
                    }
                )
            conn.execute(
                sa.text(
                    "INSERT INTO videos (id, creator_id, platform_id, title, date_posted, "
                    + ", ".join(COUNTS)
                    + ", updated_at) VALUES (:id, :creator_id, :platform_id, :title, "
                    ":date_posted, " + ", ".join(":" + c for c in COUNTS) + ", :updated_at)"
                ),
                rows,
            )
    finally:
        engine.dispose()


# -- the same data as events ---------------------------------------------------------


def _stamp(date: str) -> str:
    return f"{date}T00:00:00Z"


def same_data_as_events(
    goose: list[dict[str, str]], videos: dict[Any, list[dict[str, str]]]
) -> list[Event]:
    """The rows published directly: a performance per titled row, a video posted at its
    first snapshot and updated at each later one (as ``statsworker import`` does)."""
    out: list[dict[str, Any]] = []
    for i, r in enumerate(goose, start=1):
        if r["song_title"]:
            out.append(
                {
                    "type": "performance.recorded",
                    "event_id": f"direct-{i}",
                    "occurred_at": _stamp(r["show_date"]),
                    "vertical": "goose",
                    "performance_id": str(i),
                    "show_id": r["show_id"],
                    "show_date": r["show_date"],
                    "song": slugify(r["song_title"]),
                    "song_title": r["song_title"],
                }
            )
    for (channel, vid), snaps in videos.items():
        creator = slugify(channel)
        if not creator:
            continue
        for k, snap in enumerate(snaps):
            counts = {c: int(snap[c] or 0) for c in COUNTS}
            common = {"creator": creator, "video_id": vid, **counts}
            if k == 0:
                out.append({"type": "video.posted", "event_id": f"direct-{creator}-{vid}",
                            "occurred_at": _stamp(snap["snapshot_date"]),
                            "date_posted": snap["date_posted"], **common})  # fmt: skip
            else:
                out.append({"type": "video.metrics_updated",
                            "event_id": f"direct-{creator}-{vid}-{k}",
                            "occurred_at": _stamp(snap["snapshot_date"]), **common})  # fmt: skip
    return [parse_event(obj) for obj in out]


def apply_directly(conns: Connections, events: list[Event]) -> None:
    conns.setlists.apply([e for e in events if e.type.startswith("performance")], TODAY)  # type: ignore[misc]
    conns.videos.apply([e for e in events if e.type.startswith("video")])  # type: ignore[misc]


def comparable_state(conns: Connections) -> dict[str, Any]:
    """Every key with its content, named without the prefix, except the records that
    hold event versions (``perf``, ``video``): event ids differ between the two ways."""
    client, prefix = conns.state, conns.settings.key_prefix
    names = [
        key
        for key in client.scan_iter(keys.all_keys_pattern(prefix), count=5000)
        if key != keys.metrics_key(prefix) and not key.endswith((":perf", ":video"))
    ]
    pipe = client.pipeline(transaction=False)
    for key in names:
        pipe.type(key)
    kinds = pipe.execute()
    for key, kind in zip(names, kinds, strict=True):
        if kind == "hash":
            pipe.hgetall(key)
        elif kind == "zset":
            pipe.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            pipe.get(key)
        else:
            pipe.smembers(key)
    return {key[len(prefix) :]: value for key, value in zip(names, pipe.execute(), strict=True)}


def backfill_cli(conns: Connections, url: str, monkeypatch: pytest.MonkeyPatch) -> int:
    with as_current(conns, monkeypatch):
        code = cli.main(["backfill", "--from-db", url])
    run_worker(conns, burst=True, with_scheduler=False)
    assert failed_jobs(conns) == []
    return code


VIDEO_ROWS = 1000
"""Snapshot rows of the video data set loaded: 800 videos of 600 channels over six days,
eight channels with no letter or digit in their name. (The whole set adds time, not
cases; the setlist data set is loaded whole.)"""


def test_backfill_gives_the_state_of_the_same_data_published_as_events(
    real_backend: Backend,
    log_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    goose, videos = goose_rows(), video_snapshots(VIDEO_ROWS)
    site = f"sqlite:///{tmp_path / 'site.db'}"
    load_site(site, goose, videos)
    backend = real_backend
    conns = make_conns(backend, log_url, key_prefix=f"{backend.prefix}:main")

    assert backfill_cli(conns, site, monkeypatch) == 1  # some rows cannot be mapped
    err = capsys.readouterr().err
    untitled = [i for i, r in enumerate(goose, start=1) if not r["song_title"]]
    assert len(untitled) == 66
    for i in untitled:
        assert f"performances row {i}: song " in err and " has no title" in err
    nameless = sorted(c for c, _ in videos if not slugify(c))
    assert nameless and "has no slug and no name with a letter or digit" in err
    reported = [
        line for line in err.splitlines() if line.startswith(("performances row", "videos row"))
    ]
    assert len(reported) == 66 + sum(1 for c, _ in videos if not slugify(c))

    reference = make_conns(backend, log_url, key_prefix=f"{backend.prefix}:ref")
    apply_directly(reference, same_data_as_events(goose, videos))
    assert comparable_state(conns) == comparable_state(reference)
    creators = sorted({slugify(c) for c, _ in videos if slugify(c)})[:3]
    songs = ["arcadia", "hungersite", "no-such-song"]
    assert answers(conns, ["goose"], creators, songs) == answers(
        reference, ["goose"], creators, songs
    )

    log = publishing.event_log(conns)
    logged = log.count()
    before = comparable_state(conns)
    assert backfill_cli(conns, site, monkeypatch) == 1
    assert log.count() == logged
    assert comparable_state(conns) == before


def test_a_postgresql_site_database_backfills_like_an_sqlite_one(
    real_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    goose, videos = goose_rows(400), video_snapshots(300)
    lite = f"sqlite:///{tmp_path / 'site.db'}"
    load_site(lite, goose, videos)
    log_url = f"sqlite:///{tmp_path / 'events.db'}"
    backend = real_backend
    from_lite = make_conns(backend, log_url, key_prefix=f"{backend.prefix}:lite")
    from_pg = make_conns(backend, log_url, key_prefix=f"{backend.prefix}:pg")
    backfill_cli(from_lite, lite, monkeypatch)
    with postgres_schema() as pg:
        load_site(pg, goose, videos)
        backfill_cli(from_pg, pg, monkeypatch)
    assert from_lite.setlists.verticals() == ["goose"]
    assert comparable_state(from_pg) == comparable_state(from_lite)


def test_a_database_that_is_not_a_site_is_refused(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    other = tmp_path / "other.db"
    engine = sa.create_engine(f"sqlite:///{other}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE things (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    conns = make_conns(backend, f"sqlite:///{tmp_path / 'events.db'}")
    with as_current(conns, monkeypatch):
        assert cli.main(["backfill", "--from-db", f"sqlite:///{other}"]) == 2
    assert "neither a setlist site's tables" in capsys.readouterr().err
    assert publishing.event_log(conns).count() == 0
    # A path that names no file is said so, and not created as an empty database.
    missing = tmp_path / "typo.db"
    with as_current(conns, monkeypatch):
        assert cli.main(["backfill", "--from-db", f"sqlite:///{missing}"]) == 2
    assert capsys.readouterr().err.strip() == f"statsworker: sqlite:///{missing}: no such file"
    assert not missing.exists()
    # Without uri=true, SQLite takes "file:..." as a plain file name too.
    monkeypatch.chdir(tmp_path)
    with as_current(conns, monkeypatch):
        assert cli.main(["backfill", "--from-db", "sqlite:///file:typo.db"]) == 2
    assert capsys.readouterr().err.strip().endswith("file:typo.db: no such file")
    assert not (tmp_path / "file:typo.db").exists()


def test_the_progress_rate_is_the_average_since_the_start() -> None:
    """What the summary line gives, not rich's estimate over the last few updates."""
    from types import SimpleNamespace

    from worker.log_commands import RateColumn

    def shown(**task: Any) -> str:
        return RateColumn().render(SimpleNamespace(**task)).plain  # type: ignore[arg-type]

    running = {"finished": False, "finished_time": None, "speed": 50.0, "finished_speed": None}
    assert shown(**running, elapsed=4.0, completed=10_000) == "2,500 rows/s"
    done = {"finished": True, "elapsed": 9.0, "speed": 50.0, "finished_speed": 50.0}
    assert shown(**done, finished_time=8.0, completed=10_000) == "1,250 rows/s"
    assert shown(**running, elapsed=0.0, completed=0) == "- rows/s"


def test_the_progress_total_follows_a_count_past_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log that grows while a rebuild reads it: the bar never shows 3313/3178."""
    from rich.progress import Progress

    from worker import log_commands

    seen: list[tuple[float, float | None]] = []
    real_update = Progress.update

    def update(self: Progress, task: Any, **kwargs: Any) -> None:
        real_update(self, task, **kwargs)
        shown = self.tasks[0]
        seen.append((shown.completed, shown.total))

    monkeypatch.setattr(Progress, "update", update)
    with log_commands.progress_bar("replaying", 10) as advance:
        advance(6)
        advance(6)
    assert seen[-2:] == [(6, 10), (12, 12)]
