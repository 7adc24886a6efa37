"""Concurrent readers: over 100 reads in flight while workers ingest; none sees half an event.

A real ``statsworker api`` (uvicorn on a free localhost port) and two ``statsworker
worker`` processes run against the real Redis with a private prefix and queue. The
stream is built so that every consistent state satisfies invariants that tie together
keys written by the same event: each show has exactly one performance (so a band's
shows equal its performances, in the totals and in every trend period), and the "hot"
songs are only played within the 30 days before ``as_of`` (so each of their window
counters equals their total plays). An answer that saw an event half applied would
break one of them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from events.schemas import Event, parse_event
from tests.conftest import REAL_REDIS_URL, Backend
from tests.faults_support import (
    STOP_SECONDS,
    TODAY,
    FaultEnv,
    Workers,
    free_port,
    queue_state,
    statsworker_command,
    wait_drained,
)
from worker.connections import Connections
from worker.publishing import make_publisher

BAND = "inv"
SHOWS = 2_400
"""Shows published, one performance each."""
READERS = 120
"""Reading tasks, each with one request in flight at a time."""
HOT = [f"hot-{i}" for i in range(5)]
OLD = [f"old-{i}" for i in range(10)]


def stream(seed: int) -> list[Event]:
    """One performance per show; hot songs in the last 30 days, old songs before."""
    rng = random.Random(seed)
    events = []
    for n in range(SHOWS):
        hot = n % 2 == 0
        songs = HOT if hot else OLD
        song = songs[n // 2] if n < 2 * len(OLD) and n // 2 < len(songs) else rng.choice(songs)
        if hot:
            date = TODAY - dt.timedelta(days=rng.randrange(30))
        else:
            date = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(150))
        events.append(
            parse_event(
                {
                    "type": "performance.recorded",
                    "event_id": f"e{n}",
                    "occurred_at": "2024-06-30T12:00:00Z",
                    "vertical": BAND,
                    "performance_id": f"p{n}",
                    "show_id": f"show-{n}",
                    "show_date": date.isoformat(),
                    "song": song,
                }
            )
        )
    return events


@pytest.fixture
def api(env: FaultEnv, tmp_path: Path) -> Iterator[str]:
    """``statsworker api`` on a free port; its base URL once ``/health`` answers 200."""
    port = free_port()
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(
        [*statsworker_command(), "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env.environ(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"the API exited; see {tmp_path / 'api.log'}"
            try:
                if httpx2.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not come up"
            time.sleep(0.1)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def env(real_backend: Backend, tmp_path: Path) -> FaultEnv:
    return FaultEnv(
        REAL_REDIS_URL,
        real_backend.prefix,
        real_backend.queue,
        f"sqlite:///{tmp_path / 'events.db'}",
        batch_size=10,
    )


@pytest.fixture
def workers(env: FaultEnv, tmp_path: Path) -> Iterator[Workers]:
    procs = Workers(env, tmp_path)
    try:
        yield procs
    finally:
        procs.stop()


# -- what every answer must satisfy ------------------------------------------------


def check_stats(a: dict[str, Any]) -> None:
    assert a["total_shows"] == a["total_performances"], a
    assert a["avg_songs_per_show"] == (1.0 if a["total_shows"] else 0), a
    assert a["unique_songs_played"] <= a["total_songs"], a
    assert a["first_show"] <= a["last_show"], a


def check_trends(a: dict[str, Any]) -> None:
    for period in a["trends"]:
        assert period["shows"] == period["performances"], a


def check_song(a: dict[str, Any]) -> None:
    total = a["total_plays"]
    assert a["plays_last_30_days"] == a["plays_last_90_days"] == a["plays_last_year"] == total, a
    assert a["velocity_score"] == 6 * total, a
    last = dt.date.fromisoformat(a["last_played"])
    assert a["days_since_played"] == (TODAY - last).days, a
    assert a["first_played"] <= a["last_played"], a


def check_velocity(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        p30, p90, p365 = (
            row["plays_last_30_days"],
            row["plays_last_90_days"],
            row["plays_last_year"],
        )
        assert row["velocity_score"] == 3 * p30 + 2 * p90 + p365, row
        assert p30 <= p90 <= p365 <= row["total_plays"], row
        if row["song_slug"] in HOT:
            assert p30 == row["total_plays"], row


def check_gaps(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        last = dt.date.fromisoformat(row["last_played"])
        assert row["days_since_played"] == (TODAY - last).days, row
    days = [row["days_since_played"] for row in rows]
    assert days == sorted(days, reverse=True), rows


READS = [
    ("/analytics/stats/inv", check_stats),
    ("/analytics/trends/inv?period=month", check_trends),
    ("/analytics/trends/inv?period=quarter", check_trends),
    *((f"/analytics/songs/inv/{song}", check_song) for song in HOT),
    ("/analytics/velocity/inv?limit=200", check_velocity),
    ("/analytics/gaps/inv?min_plays=0&limit=200", check_gaps),
]


class Tally:
    """What the readers saw: reads, errors, and the most requests in flight at once."""

    def __init__(self) -> None:
        self.reads = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.errors: list[str] = []


async def reader(client: httpx2.AsyncClient, tally: Tally, stop: asyncio.Event, seed: int) -> None:
    rng = random.Random(seed)
    seen_total = 0
    while not stop.is_set():
        url, check = rng.choice(READS)
        tally.in_flight += 1
        tally.max_in_flight = max(tally.max_in_flight, tally.in_flight)
        try:
            answer = await client.get(url)
        except httpx2.HTTPError as exc:
            tally.errors.append(f"{url}: {exc!r}")
            continue
        finally:
            tally.in_flight -= 1
        tally.reads += 1
        if answer.status_code != 200:
            tally.errors.append(f"{url}: {answer.status_code} {answer.text[:200]}")
            continue
        body = answer.json()
        try:
            check(body)
            if check is check_stats:
                # Reads of one task are sequential, so the totals they see never go back.
                assert body["total_performances"] >= seen_total, (seen_total, body)
                seen_total = body["total_performances"]
        except AssertionError as exc:
            tally.errors.append(f"{url}: {exc}")


async def read_while(base: str, ingest_done: threading.Event, conns: Connections) -> Tally:
    tally = Tally()
    stop = asyncio.Event()
    limits = httpx2.Limits(max_connections=READERS + 10, max_keepalive_connections=READERS + 10)
    async with httpx2.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        tasks = [asyncio.create_task(reader(client, tally, stop, i)) for i in range(READERS)]
        while not ingest_done.is_set():  # the ingest goes on until the queue drains
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*tasks)
    return tally


def ingest(conns: Connections, events: list[Event], done: threading.Event) -> None:
    """Publish the rest of the stream in small chunks, then wait for the queue to drain."""
    publisher = make_publisher(conns)
    try:
        for start in range(0, len(events), 60):
            publisher.publish(events[start : start + 60])
            time.sleep(0.05)
        wait_drained(conns, timeout=120)
    finally:
        done.set()


@pytest.mark.timeout(240)
def test_concurrent_reads_never_see_half_an_event(
    env: FaultEnv, api: str, workers: Workers
) -> None:
    events = stream(seed=5)
    conns = env.connections()
    workers.start(2)
    first, rest = events[:40], events[40:]  # every song's first play is in the first part
    make_publisher(conns).publish(first)
    deadline = time.monotonic() + 60
    while httpx2.get(f"{api}/analytics/songs/{BAND}/{HOT[-1]}").status_code != 200:
        assert time.monotonic() < deadline, "the first events were never applied"
        workers.check_alive()
        time.sleep(0.1)

    done = threading.Event()
    publisher = threading.Thread(target=ingest, args=(conns, rest, done), daemon=True)
    publisher.start()
    tally = asyncio.run(read_while(api, done, conns))
    publisher.join(timeout=10)
    workers.check_alive()

    print(f"{tally.reads} reads, at most {tally.max_in_flight} in flight")
    assert tally.errors == [], tally.errors[:10]
    assert tally.max_in_flight >= 100
    assert tally.reads >= 2 * READERS
    assert queue_state(conns)["failed"] == 0
    final = httpx2.get(f"{api}/analytics/stats/{BAND}").json()
    assert final["total_performances"] == final["total_shows"] == SHOWS
