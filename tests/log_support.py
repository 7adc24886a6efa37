"""Tools of the event-log tests: a log database per test (SQLite or PostgreSQL), the
connections around it, a random event stream and every route's answer."""

from __future__ import annotations

import datetime as dt
import os
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api_stub.app import create_app
from events.schemas import Event, parse_event
from stats import keys
from stats.settings import Settings, get_settings
from tests.conftest import REAL_REDIS_URL, Backend
from worker import context, eventlog, migrations
from worker.connections import MEMORY_URL, Connections

POSTGRES_URL = os.environ.get(
    "STATSWORKER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
"""The machine's PostgreSQL; each test gets its own schema in it, dropped afterwards."""

TODAY = dt.date(2024, 6, 30)
"""``STATSWORKER_TODAY`` of these tests: windowed counters are kept for this date."""


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose connections work in a fresh schema of the test database."""
    schema = f"t_log_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:  # pragma: no cover - only when the server is down
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        eventlog.close_all()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


LOG_DATABASES = ("sqlite", "postgresql")
"""The event-log databases every log test runs on."""


def log_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """An empty event log at its latest schema: an SQLite file, or a PostgreSQL schema.

    Each test module wraps it in its own ``log_url`` fixture, parametrized by
    :data:`LOG_DATABASES`.
    """
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.db'}"
        try:
            yield url
        finally:
            eventlog.close_all()
        return
    with postgres_schema() as url:
        engine = eventlog.make_engine(url)
        migrations.upgrade(engine)
        engine.dispose()
        yield url


def make_conns(backend: Backend, log_url: str, **changes: Any) -> Connections:
    """Connections on the test's Redis backend and prefix, with the event log at ``log_url``."""
    values: dict[str, Any] = {
        "redis_url": MEMORY_URL if backend.name == "fakeredis" else REAL_REDIS_URL,
        "queue": backend.queue,
        "key_prefix": backend.prefix,
        "database_url": log_url,
        "today": TODAY,
    }
    settings = Settings(**{**values, **changes})
    return Connections(settings, backend.client, backend.raw)


@contextmanager
def as_current(conns: Connections, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the command line (``worker.cli.main``) run on ``conns``."""
    for name, value in (
        ("STATSWORKER_DATABASE_URL", conns.settings.database_url),
        ("STATSWORKER_KEY_PREFIX", conns.settings.key_prefix),
        ("STATSWORKER_QUEUE", conns.settings.queue),
        ("STATSWORKER_TODAY", TODAY.isoformat()),
    ):
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    context.set_current(conns)
    try:
        yield
    finally:
        get_settings.cache_clear()
        context._current = None


def wipe(backend: Backend) -> None:
    """Lose everything in Redis that belongs to the test: its prefix's keys and its queue."""
    backend.cleanup()
    assert list(backend.raw.scan_iter(f"{backend.prefix}:*")) == []


TAGS = ["music", "live", "Tour", "fans", "cover", "#Fans", "##Live", "###tour"]
"""Written as sources write them: a replay of the log must read the same tags."""


def _stamp(rng: random.Random) -> str:
    moment = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
        seconds=rng.randrange(0, 200 * 86400)
    )
    return moment.isoformat().replace("+00:00", "Z")


def random_stream(seed: int, performances: int, videos: int) -> list[Event]:
    """Distinct events over two bands and two creators, with everything that makes a
    state hard: corrections, retractions, ties of occurred_at, plays in the future of
    ``TODAY`` and within its windows, long gaps (bustouts), deleted and re-posted videos.
    """
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    songs = [f"song-{i:02d}" for i in range(40)]
    n = 0
    while n < performances:
        vertical = rng.choice(("band-a", "band-b"))
        show = f"s{n}"
        date = TODAY + dt.timedelta(days=rng.choice((-4000, -400, -100, -20, 0, 3)))
        date += dt.timedelta(days=rng.randrange(-300, 1) if date < TODAY else 0)
        for position in range(rng.randint(3, 9)):
            pid = f"{show}-{position}"
            at = _stamp(rng)
            song = rng.choice(songs[: rng.choice((10, 40))])
            out.append(
                {
                    "type": "performance.recorded",
                    "event_id": f"r-{vertical}-{pid}",
                    "occurred_at": at,
                    "vertical": vertical,
                    "performance_id": pid,
                    "show_id": show,
                    "show_date": date.isoformat(),
                    "song": song,
                    "song_title": f"{song.title()} ({rng.choice('ab')})",
                }
            )
            roll = rng.random()
            if roll < 0.08:
                out.append(
                    {
                        "type": "performance.retracted",
                        "event_id": f"x-{vertical}-{pid}",
                        "occurred_at": rng.choice((at, _stamp(rng))),
                        "vertical": vertical,
                        "performance_id": pid,
                    }
                )
            elif roll < 0.16:
                out.append(
                    {
                        "type": "performance.recorded",
                        "event_id": f"c-{vertical}-{pid}",
                        "occurred_at": rng.choice((at, _stamp(rng))),  # ties are real
                        "vertical": vertical,
                        "performance_id": pid,
                        "show_id": show,
                        "show_date": (date + dt.timedelta(days=rng.choice((0, 1, 90)))).isoformat(),
                        "song": rng.choice(songs),
                    }
                )
            n += 1
    for v in range(videos):
        creator = rng.choice(("ann", "bo"))
        vid = f"vid{v}"
        views = rng.randrange(0, 10_000)
        out.append(
            {
                "type": "video.posted",
                "event_id": f"p-{creator}-{vid}",
                "occurred_at": _stamp(rng),
                "creator": creator,
                "video_id": vid,
                "date_posted": (TODAY - dt.timedelta(days=rng.randrange(0, 60))).isoformat(),
                "hashtags": rng.sample(TAGS, rng.randint(0, 3)),
                **_counts(rng, views),
            }
        )
        for k in range(rng.randint(0, 3)):
            views += rng.randrange(0, 50_000)
            out.append(
                {
                    "type": "video.metrics_updated",
                    "event_id": f"m-{creator}-{vid}-{k}",
                    "occurred_at": _stamp(rng),
                    "creator": creator,
                    "video_id": vid,
                    **_counts(rng, views),
                }
            )
        if rng.random() < 0.15:
            out.append(
                {
                    "type": "video.deleted",
                    "event_id": f"d-{creator}-{vid}",
                    "occurred_at": _stamp(rng),
                    "creator": creator,
                    "video_id": vid,
                }
            )
    return [parse_event(obj) for obj in out]


def _counts(rng: random.Random, views: int) -> dict[str, int]:
    return {
        "views": views,
        "likes": rng.randrange(0, views // 10 + 1),
        "comments": rng.randrange(0, views // 50 + 1),
        "shares": rng.randrange(0, views // 80 + 1),
        "bookmarks": rng.randrange(0, views // 90 + 1),
        "new_followers": rng.randrange(0, 40),
    }


def setlist_routes(vertical: str, songs: list[str]) -> list[str]:
    """Every setlist route of ``vertical``, with parameters that reach every branch."""
    v = vertical
    routes = [
        f"/analytics/gaps/{v}?min_plays=1&limit=200",
        f"/analytics/gaps/{v}?min_plays=2&limit=200&as_of=2023-12-31",
        f"/analytics/velocity/{v}?limit=200",
        f"/analytics/velocity/{v}?limit=200&as_of=2024-05-01",
        f"/analytics/trends/{v}?period=month",
        f"/analytics/trends/{v}?period=quarter&as_of=2024-01-15",
        f"/analytics/stats/{v}",
        f"/analytics/stats/{v}?as_of=2020-01-01",
        f"/analytics/bustouts/{v}?days=100000&gap_threshold=60",
        f"/analytics/bustouts/{v}?days=100000&gap_threshold=1&gap_shows_threshold=2",
        f"/analytics/debut-songs/{v}?days=100000",
    ]
    return routes + [f"/analytics/songs/{v}/{song}" for song in songs]


def video_routes(creator: str) -> list[str]:
    """Every video route of ``creator``."""
    base = f"/analytics/insights/{creator}"
    return [
        f"{base}/time-series",
        f"{base}/time-series?start=2024-06-01&end=2024-06-20",
        f"{base}/overview",
        f"{base}/hashtags?limit=200",
        f"{base}/posting-time",
    ]


def answers(
    conns: Connections, verticals: list[str], creators: list[str], songs: list[str]
) -> dict[str, Any]:
    """Status and body of every route for these verticals, creators and songs."""
    client = TestClient(create_app(conns))
    routes = [r for v in verticals for r in setlist_routes(v, songs)]
    routes += [r for c in creators for r in video_routes(c)]
    out: dict[str, Any] = {}
    for route in routes:
        response = client.get(route)
        assert response.status_code in (200, 404), (route, response.text)
        out[route] = (response.status_code, response.json())
    return out


def state_dump(client: Any, vkeys: tuple[str, ...]) -> dict[str, Any]:
    """Type and full content of each key (None when it does not exist)."""
    out: dict[str, Any] = {}
    for key in vkeys:
        kind = client.type(key)
        if kind == "hash":
            out[key] = ("hash", client.hgetall(key))
        elif kind == "zset":
            out[key] = ("zset", client.zrange(key, 0, -1, withscores=True))
        elif kind == "string":
            out[key] = ("string", client.get(key))
        elif kind == "none":
            out[key] = None
        else:  # pragma: no cover - a key of another type would be a schema change
            out[key] = (kind, None)
    return out


def keys_of(prefix: str, vertical: str) -> keys.VerticalKeys:
    """The vertical's keys under ``prefix``."""
    return keys.vertical_keys(prefix, vertical)
