"""Tools of the fault-injection tests: a generated event stream, worker processes, checks.

Setlist answers are checked against ``tests/setlist_oracle.py`` (a recompute from the
contract that shares no code with ``stats``). Video answers are checked against a
reference state: the same distinct events applied once, in one process, in their
natural order, into a second key prefix (the video store itself is held to its own
recompute by ``tests/test_videos_property.py``).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rq.registry import ScheduledJobRegistry

from events.schemas import (
    Event,
    PerformanceRecorded,
    PerformanceRetracted,
    VideoDeleted,
    VideoMetricsUpdated,
    VideoPosted,
    parse_event,
)
from stats.settings import Settings
from tests.setlist_oracle import SetlistOracle, check_all_reads, dump
from worker.connections import Connections

TODAY = dt.date(2024, 6, 30)
"""``STATSWORKER_TODAY`` of every fault test: windowed counters are kept for this date."""

AS_OFS = (TODAY, dt.date(2023, 12, 31))
"""Dates every setlist read is compared at."""

STOP_SECONDS = 15.0
"""How long a worker may take to stop after SIGTERM before it is killed."""


# -- configuration -----------------------------------------------------------------


@dataclass(frozen=True)
class FaultEnv:
    """The settings shared by the test and the processes it starts."""

    redis_url: str
    prefix: str
    queue: str
    database_url: str
    batch_size: int = 100

    def environ(self) -> dict[str, str]:
        """The environment of a ``statsworker`` child process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STATSWORKER_")}
        env.update(
            STATSWORKER_REDIS_URL=self.redis_url,
            STATSWORKER_KEY_PREFIX=self.prefix,
            STATSWORKER_QUEUE=self.queue,
            STATSWORKER_DATABASE_URL=self.database_url,
            STATSWORKER_TODAY=TODAY.isoformat(),
            STATSWORKER_BATCH_SIZE=str(self.batch_size),
        )
        return env

    def settings(self, **changes: Any) -> Settings:
        """The same settings, for connections made in the test process."""
        values: dict[str, Any] = {
            "redis_url": self.redis_url,
            "key_prefix": self.prefix,
            "queue": self.queue,
            "database_url": self.database_url,
            "today": TODAY,
            "batch_size": self.batch_size,
        }
        values.update(changes)
        return Settings(**values)

    def connections(self, **changes: Any) -> Connections:
        """Connections of the test process to the same state and queue."""
        return Connections.from_settings(self.settings(**changes))


def statsworker_command() -> list[str]:
    """The console script beside this interpreter, else ``python -m worker.cli``."""
    script = Path(sys.executable).with_name("statsworker")
    if script.exists():
        return [str(script)]
    found = shutil.which("statsworker")
    return [found] if found else [sys.executable, "-m", "worker.cli"]


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- worker processes ---------------------------------------------------------------


@dataclass
class Workers:
    """``statsworker worker`` processes, each the leader of its own process group.

    A worker's RQ scheduler runs in a child process; killing the group kills the
    whole worker, as a container or a lost machine would.
    """

    env: FaultEnv
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: int = 0

    def start(self, n: int = 1) -> None:
        """Start ``n`` more workers."""
        for _ in range(n):
            self.procs.append(self._spawn())

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.started += 1
        out = (self.logs / f"worker-{self.started}.log").open("wb")
        try:
            return subprocess.Popen(
                [*statsworker_command(), "worker"],
                env=self.env.environ(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()

    def kill(self, index: int) -> int:
        """SIGKILL worker ``index`` (its whole group) and start a new one in its place."""
        proc = self.procs[index]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        self.procs[index] = self._spawn()
        return proc.pid

    def revive(self) -> int:
        """Start a new worker for each one that has exited; returns how many."""
        revived = 0
        for index, proc in enumerate(self.procs):
            if proc.poll() is not None:
                self.procs[index] = self._spawn()
                revived += 1
        return revived

    def check_alive(self) -> None:
        """Fail when a worker ended on its own (it should only end when killed)."""
        for proc in self.procs:
            code = proc.poll()
            assert code is None, f"worker {proc.pid} exited with {code}; see {self.logs}"

    def stop(self) -> None:
        """SIGTERM every worker, then SIGKILL what has not stopped in time."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the scheduler child, if it outlived it
            except ProcessLookupError:
                pass


def queue_state(conns: Connections) -> dict[str, int]:
    """Jobs waiting, running, taken but not started, scheduled and failed."""
    queue = conns.queue
    raw = conns.raw
    return {
        "queued": int(raw.llen(queue.key)),
        "started": int(raw.zcard(queue.started_job_registry.key)),
        "intermediate": int(raw.llen(queue.intermediate_queue_key)),
        "scheduled": ScheduledJobRegistry(queue=queue).get_job_count(cleanup=False),
        "failed": queue.failed_job_registry.get_job_count(cleanup=False),
    }


def wait_drained(conns: Connections, timeout: float, workers: Workers | None = None) -> None:
    """Wait until no job is waiting, running or scheduled; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while True:
        state = queue_state(conns)
        busy = state["queued"] + state["started"] + state["intermediate"] + state["scheduled"]
        now = time.monotonic()
        if busy == 0:
            # Twice in a row, a moment apart: a job between two lists is not missed.
            if quiet_since is not None and now - quiet_since >= 0.3:
                return
            quiet_since = quiet_since or now
        else:
            quiet_since = None
        if workers is not None:
            workers.check_alive()
        assert now < deadline, f"queue not drained after {timeout:.0f} s: {state}"
        time.sleep(0.1)


# -- the event stream -----------------------------------------------------------------

BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

SMALL_BAND = "band-small"
"""A band with about 1% of the plays: small enough for every read of the oracle."""


def _stamp(rng: random.Random) -> str:
    moment = BASE + dt.timedelta(seconds=rng.randrange(0, 90 * 86400))
    return moment.isoformat().replace("+00:00", "Z")


def generate_events(seed: int, performances: int, videos: int = 0) -> list[Event]:
    """A stream with corrections, retractions, re-records, ties and stale events.

    ``performances`` recorded performances over three bands, about 8% of them
    retracted, 6% corrected (another song or date, a later or an earlier event), and
    ``videos`` videos with several metric updates each, some deleted and re-posted.
    """
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    bands = ("band-a", "band-b", "band-c", SMALL_BAND)
    weights = (33, 33, 33, 1.2)
    songs = [f"song-{i:03d}" for i in range(90)]
    n = 0
    while n < performances:
        vertical = rng.choices(bands, weights)[0]
        show = f"s{n}"
        date = dt.date(1995, 1, 1) + dt.timedelta(days=rng.randrange(0, 30 * 365))
        for position in range(rng.randint(8, 20)):
            pid = f"{show}-{position}"
            song = rng.choice(songs[: rng.choice((20, 60, 90))])
            at = _stamp(rng)
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
                    "song_title": song.replace("-", " ").title(),
                    "position": position,
                }
            )
            roll = rng.random()
            if roll < 0.08:
                out.append(
                    {
                        "type": "performance.retracted",
                        "event_id": f"x-{vertical}-{pid}",
                        "occurred_at": _stamp(rng),
                        "vertical": vertical,
                        "performance_id": pid,
                    }
                )
            elif roll < 0.14:
                fixed = date + dt.timedelta(days=rng.choice((0, 1, 400)))
                out.append(
                    {
                        "type": "performance.recorded",
                        "event_id": f"c-{vertical}-{pid}",
                        "occurred_at": rng.choice((at, _stamp(rng))),  # ties are real
                        "vertical": vertical,
                        "performance_id": pid,
                        "show_id": show,
                        "show_date": fixed.isoformat(),
                        "song": rng.choice(songs),
                    }
                )
            n += 1
    for v in range(videos):
        creator = rng.choice(("ann", "bo"))
        vid = f"vid{v}"
        posted = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(0, 170))
        tags = rng.sample(["music", "live", "Tour", "#tour", "fans", "cover"], rng.randint(0, 3))
        views = rng.randrange(0, 10_000)
        out.append(
            {
                "type": "video.posted",
                "event_id": f"p-{creator}-{vid}",
                "occurred_at": _stamp(rng),
                "creator": creator,
                "video_id": vid,
                "date_posted": posted.isoformat(),
                "hashtags": tags,
                **_counts(rng, views),
            }
        )
        for k in range(rng.randint(1, 5)):
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
        if rng.random() < 0.1:
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


def deliveries(events: Sequence[Event], seed: int, low: int = 2, high: int = 3) -> list[Event]:
    """Each event ``low`` to ``high`` times, all shuffled."""
    rng = random.Random(seed)
    out = [e for e in events for _ in range(rng.randint(low, high))]
    rng.shuffle(out)
    return out


# -- checking answers -------------------------------------------------------------


def dump_state(client: Any, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` (but the operational counters) with its content."""
    state: dict[str, Any] = {}
    for key in client.scan_iter(f"{prefix}:*", count=1000):
        name = key[len(prefix) :]
        kind = client.type(key)
        if name == ":metrics":
            continue
        if kind == "hash":
            state[name] = client.hgetall(key)
        elif kind == "zset":
            state[name] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            state[name] = sorted(client.smembers(key))
        elif kind == "list":
            state[name] = client.lrange(key, 0, -1)
        else:
            state[name] = client.get(key)
    return state


def apply_reference(conns: Connections, events: Iterable[Event], prefix: str) -> Connections:
    """The distinct ``events`` applied once, in order, in this process, under ``prefix``."""
    reference = Connections(
        conns.settings.model_copy(update={"key_prefix": prefix}), conns.state, conns.raw
    )
    unique = sorted({e.event_id: e for e in events}.values(), key=lambda e: e.version)
    for start in range(0, len(unique), 1000):
        batch = unique[start : start + 1000]
        reference.setlists.apply(
            [e for e in batch if isinstance(e, PerformanceRecorded | PerformanceRetracted)], TODAY
        )
        reference.videos.apply(
            [e for e in batch if isinstance(e, VideoPosted | VideoMetricsUpdated | VideoDeleted)]
        )
    return reference


def check_answers(conns: Connections, events: Iterable[Event], reference_prefix: str) -> None:
    """The state and the reads of ``conns`` equal the recompute of the distinct ``events``.

    The whole state must equal the reference apply's (so every read does); on top, the
    oracle recomputes every read of the small band, and the totals, trends and a sample
    of song figures of every band (its full set of reads is quadratic in the plays).
    """
    events = list(events)
    reference = apply_reference(conns, events, reference_prefix)
    got = dump_state(conns.state, conns.settings.key_prefix)
    want = dump_state(conns.state, reference_prefix)
    assert got.keys() == want.keys(), sorted(got.keys() ^ want.keys())[:20]
    wrong = [name for name in want if got[name] != want[name]]
    assert not wrong, f"state differs from the recompute in {wrong[:20]}"
    unique = {e.event_id: e for e in events}.values()
    oracle = SetlistOracle(
        e for e in unique if isinstance(e, PerformanceRecorded | PerformanceRetracted)
    )
    store = conns.setlists
    assert sorted(store.verticals()) == sorted(oracle.known)
    for vertical in sorted(oracle.known):
        for as_of in AS_OFS:
            if vertical == SMALL_BAND:
                check_all_reads(store, oracle, vertical, as_of)
                continue
            assert dump(store.stats(vertical, as_of)) == oracle.stats(vertical, as_of)
            for period in ("month", "quarter"):
                assert dump(store.trends(vertical, as_of, period)) == oracle.trends(
                    vertical, as_of, period
                ), (vertical, period)
            for song in oracle.songs(vertical)[::9]:
                assert dump(store.song(vertical, song, as_of)) == oracle.song(
                    vertical, song, as_of
                ), (vertical, song, as_of)
    for creator in reference.videos.creators():
        assert conns.videos.overview(creator) == reference.videos.overview(creator)


def delete_prefix(client: Any, prefix: str) -> None:
    """Delete every key under ``prefix`` (never anything else)."""
    batch = list(client.scan_iter(f"{prefix}:*", count=1000))
    for start in range(0, len(batch), 500):
        client.delete(*batch[start : start + 500])


def private_name(tag: str) -> str:
    """A key prefix no other test uses."""
    return f"t{tag}{uuid.uuid4().hex[:8]}"
