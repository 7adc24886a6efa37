"""The event log: its schema is the migrations' (checked on SQLite and PostgreSQL), every
publish path stores events there before it queues them, storing is idempotent, and an
event that was logged but never queued is applied by the next worker anyway."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from rq import Queue

from api_stub.app import create_app
from events import publisher as publisher_module
from events.fields import Timestamp
from events.publisher import Publisher, job_queue
from events.schemas import Event, parse_event
from events.wire import record_of
from tests.conftest import Backend
from tests.log_support import (
    LOG_DATABASES,
    as_current,
    log_database,
    make_conns,
    postgres_schema,
    random_stream,
)
from worker import cli, context, eventlog, migrations, publishing
from worker.eventlog import EventLog, SchemaNotReady, event_log, make_engine
from worker.log_table import COLUMNS, driver_row, log_batches, sqlite_time
from worker.runner import failed_jobs, run_worker
from worker.verify import verify


@pytest.fixture(params=LOG_DATABASES)
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated event log on SQLite and on PostgreSQL."""
    yield from log_database(request.param, tmp_path)


@pytest.fixture(params=LOG_DATABASES)
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database without any table yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        eventlog.close_all()
        return
    with postgres_schema() as url:
        yield url


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _rows(url: str) -> list[dict[str, object]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.select(event_log).order_by(event_log.c.seq)
            return [dict(row._mapping) for row in conn.execute(query)]
    finally:
        engine.dispose()


def _queued(url: str) -> set[str]:
    """event_id of the rows known to have reached the queue: marked, and of no batch
    still in flight."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            in_flight = sa.select(log_batches.c.id)
            query = sa.select(event_log.c.event_id).where(
                event_log.c.enqueued,
                sa.or_(event_log.c.batch.is_(None), event_log.c.batch.not_in(in_flight)),
            )
            return set(conn.execute(query).scalars())
    finally:
        engine.dispose()


def log_batches_left(url: str) -> int:
    """Rows of ``log_batches``: batches logged and not known to be queued."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(log_batches)).scalar_one()
            )
    finally:
        engine.dispose()


def legacy_row(event: Any, now: dt.datetime) -> dict[str, Any]:
    """The row of ``event`` in the log's first schema (no ``fields``), for a Core insert."""
    row = dict(zip(COLUMNS[:-1], driver_row(event, None, now, sqlite_times=False), strict=True))
    del row["fields"]  # COLUMNS[:-1]: all but batch
    row["enqueued"] = False
    row["body"] = event.to_json_dict()
    return row


def test_migrate_command_builds_the_schema_the_models_describe(
    empty_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STATSWORKER_DATABASE_URL", empty_db)
    cli.get_settings.cache_clear()
    engine = make_engine(empty_db)
    try:
        assert cli.main(["migrate", "--check"]) == 1
        assert cli.main(["migrate"]) == 0
        assert cli.main(["migrate", "--check"]) == 0
        assert cli.main(["migrate"]) == 0
        told = capsys.readouterr().err
        assert "event log migrated from none to " in told, told
        assert told.rstrip().endswith(f"event log already at {migrations.head_revision()}"), told
        assert {"event_log", migrations.VERSION_TABLE} <= _tables(empty_db)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"version_table": migrations.VERSION_TABLE, "compare_type": True}
            )
            assert compare_metadata(ctx, eventlog.metadata) == []
        # A log written before the setlist fields existed gets them from its bodies.
        assert cli.main(["migrate", "--revision", "0001_event_log"]) == 0
        events = random_stream(seed=2, performances=20, videos=3)
        old = sa.Table("event_log", sa.MetaData(), autoload_with=engine)
        with engine.begin() as conn:
            conn.execute(
                old.insert(),
                [legacy_row(e, eventlog.utcnow()) for e in events],
            )
        assert cli.main(["migrate"]) == 0
        assert {r["event_id"]: r["fields"] for r in _rows(empty_db)} == {
            e.event_id: eventlog.setlist_fields(e) for e in events
        }
        assert cli.main(["migrate", "--revision", "base"]) == 0
        assert "event_log" not in _tables(empty_db)
        assert cli.main(["migrate", "--check"]) == 1
        assert cli.main(["migrate"]) == 0
        assert "event_log" in _tables(empty_db)
    finally:
        engine.dispose()
        cli.get_settings.cache_clear()


def test_only_an_sqlite_log_migrates_itself(empty_db: str) -> None:
    if empty_db.startswith("sqlite"):
        log = EventLog(empty_db)
        assert log.count() == 0
        log.dispose()
        return
    with pytest.raises(SchemaNotReady, match="statsworker migrate"):
        EventLog(empty_db)
    assert "event_log" not in _tables(empty_db)


def test_a_command_on_an_unmigrated_log_says_so_in_one_line(
    empty_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if empty_db.startswith("sqlite"):
        return  # an SQLite log migrates itself
    events = tmp_path / "events.jsonl"
    events.write_text("")
    monkeypatch.setenv("STATSWORKER_DATABASE_URL", empty_db)
    monkeypatch.setenv("STATSWORKER_REDIS_URL", "memory://")
    monkeypatch.setattr(context, "_current", None)  # built from these settings
    cli.get_settings.cache_clear()
    try:
        assert cli.main(["publish", str(events)]) == 2
    finally:
        cli.get_settings.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "statsworker migrate" in err[0], err


def test_appends_of_overlapping_events_at_once_all_succeed(log_url: str) -> None:
    """Two publishers logging the same events at the same moment, in opposite orders
    (a retry racing its first attempt, two ingest replicas), both commit."""
    events = random_stream(seed=5, performances=1200, videos=40)
    log = EventLog(log_url)
    failures: list[str] = []
    for rnd in range(4):
        part = events[rnd * 300 : (rnd + 1) * 300]
        barrier = threading.Barrier(2)

        def append(batch: list[Event], barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                log.append(batch)
            except Exception as exc:  # every failure is reported
                failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")

        threads = [threading.Thread(target=append, args=(b,)) for b in (part, part[::-1])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    try:
        assert failures == []
        assert log.count() == len({e.event_id for e in events[:1200]})
    finally:
        log.dispose()


def test_storing_is_idempotent_on_event_id_and_keeps_every_column(log_url: str) -> None:
    events = random_stream(seed=3, performances=80, videos=12)
    log = EventLog(log_url)
    first = log.append(events[:50])
    log.append([*events[30:], events[0], events[0]])  # overlaps and in-batch repeats
    log.append(events)
    assert log.count() == len(events)
    changed = parse_event({**events[0].to_json_dict(), "occurred_at": "2030-01-01T00:00:00Z"})
    log.append([changed])  # the first event stored under an id is the one kept
    rows = _rows(log_url)
    assert len(rows) == len(events)
    by_id = {row["event_id"]: row for row in rows}
    for event in events:
        row = by_id[event.event_id]
        assert row["type"] == event.type
        assert row["version"] == event.version
        assert row["body"] == event.to_json_dict()
        assert row["fields"] == eventlog.setlist_fields(event)
        assert row["batch"] is not None
        assert eventlog.as_utc(row["occurred_at"]) == event.occurred_at  # type: ignore[arg-type]
        vertical = getattr(event, "vertical", None)
        creator = getattr(event, "creator", None)
        assert (row["vertical"], row["creator"]) == (vertical, creator)
        entity = getattr(event, "performance_id", None) or getattr(event, "video_id", None)
        assert row["entity_id"] == entity
    assert log.verticals() == ["band-a", "band-b"]
    assert log.creators() == ["ann", "bo"]
    assert log.count(vertical="band-a") + log.count(vertical="band-b") + log.count(
        creator="ann"
    ) + log.count(creator="bo") == len(events)
    assert _queued(log_url) == set()
    assert first is not None
    log.mark_enqueued([first])
    assert _queued(log_url) == {e.event_id for e in events[:50]}
    read = [row for batch in log.iter_events(vertical="band-a", batch=7) for row in batch]
    assert sorted(r.body["event_id"] for r in read) == sorted(
        e.event_id for e in events if getattr(e, "vertical", None) == "band-a"
    )
    assert all(r.event() in events for r in read)
    log.dispose()


def test_bodies_as_they_arrived_are_stored_as_they_are(log_url: str) -> None:
    """The publisher's fast path: the JSON objects it validated are the logged bodies."""
    raw = [
        {**e.to_json_dict(), "occurred_at": e.occurred_at.isoformat()}  # +00:00, not Z
        for e in random_stream(seed=4, performances=30, videos=6)
    ]
    events = [parse_event(obj) for obj in raw]
    log = EventLog(log_url)
    before = eventlog.utcnow()
    log.append(events, raw)
    after = eventlog.utcnow()
    rows = {row["event_id"]: row for row in _rows(log_url)}
    assert {event_id: row["body"] for event_id, row in rows.items()} == {
        obj["event_id"]: obj for obj in raw
    }
    for row in rows.values():
        assert before <= eventlog.as_utc(row["logged_at"]) <= after  # type: ignore[arg-type]
    pending = log.unqueued(after + dt.timedelta(seconds=1)).rows
    assert sorted(r.seq for r in pending) == sorted(row["seq"] for row in rows.values())
    assert sorted((r.event() for r in pending), key=lambda e: e.event_id) == sorted(
        events, key=lambda e: e.event_id
    )
    assert log.unqueued(before - dt.timedelta(seconds=1)).rows == []
    log.dispose()


OPEN_LOG = "from worker.eventlog import EventLog; EventLog"


def test_processes_opening_a_new_sqlite_log_together_all_get_it(tmp_path: Path) -> None:
    """A worker and a publisher started at once both migrate the file: neither fails."""
    for attempt in range(4):
        url = f"sqlite:///{tmp_path / f'together-{attempt}.db'}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", f"{OPEN_LOG}({url!r}).dispose()"],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        # Every process is waited for before any is judged: none outlives the test.
        errors = [proc.communicate(timeout=120)[1] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0, 0, 0], errors
        engine = make_engine(url)
        try:
            assert migrations.current_revision(engine) == migrations.head_revision()
            # Whatever order the processes' statements ran in, the schema is complete.
            with engine.connect() as conn:
                assert (
                    compare_metadata(
                        MigrationContext.configure(
                            conn, opts={"version_table": migrations.VERSION_TABLE}
                        ),
                        eventlog.metadata,
                    )
                    == []
                )
                for column in ("vertical", "creator"):
                    found = _scope_index_sql(conn, f"ix_event_log_{column}")
                    assert f"{column} IS NOT NULL" in found, found
        finally:
            engine.dispose()


def as_a_source_writes_it(event: Any) -> dict[str, Any]:
    """The event as JSON that validates to it without being its canonical dump: hashtags
    with ``#``, in capitals and repeated, an offset of ``+00:00``, optional fields null."""
    obj = {**event.to_json_dict(), "occurred_at": event.occurred_at.isoformat()}
    if obj["type"] == "video.posted":
        obj.setdefault("hook", None)
        tags = obj.get("hashtags") or []
        obj["hashtags"] = [f"#{t.upper()}" if t.isascii() else f"#{t}" for t in tags] + tags
    elif obj["type"] == "performance.recorded":
        obj.setdefault("venue", None)
    assert parse_event(obj) == event
    return obj


def test_every_publish_path_logs_the_events_it_queues(
    backend: Backend, log_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conns = make_conns(backend, log_url)
    events = random_stream(seed=5, performances=40, videos=6)
    assert any(getattr(e, "hashtags", None) for e in events)
    third = len(events) // 3
    publisher = publishing.make_publisher(conns)
    assert isinstance(publisher.sink, EventLog)
    assert publisher.sink.url == log_url
    publisher.publish(events[:third])

    client = TestClient(create_app(conns))
    body = [as_a_source_writes_it(e) for e in events[third : 2 * third]]
    answer = client.post("/events", json=body)
    assert answer.status_code == 202, answer.text

    lines = tmp_path / "events.jsonl"
    sent = (json.dumps(as_a_source_writes_it(e)) for e in events[2 * third :])
    lines.write_text("\n".join(sent) + "\n")
    with as_current(conns, monkeypatch):
        assert cli.main(["publish", str(lines)]) == 0

    rows = _rows(log_url)
    assert sorted(r["event_id"] for r in rows) == sorted(e.event_id for e in events)
    assert _queued(log_url) == {e.event_id for e in events}
    run_worker(conns, burst=True, with_scheduler=False)
    assert failed_jobs(conns) == []
    assert verify(conns, publishing.event_log(conns)) == []


def test_an_event_logged_but_never_queued_is_applied_by_the_next_worker(
    backend: Backend, log_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conns = make_conns(backend, log_url)
    events = random_stream(seed=8, performances=30, videos=5)
    publisher = publishing.make_publisher(conns)

    def die(*_args: object, **_kwargs: object) -> None:
        raise redis.ConnectionError("the publisher died between its commit and the enqueue")

    monkeypatch.setattr(conns.queue, "enqueue_many", die)
    with pytest.raises(redis.ConnectionError):
        publisher.publish(events)
    monkeypatch.undo()
    rows = _rows(log_url)
    assert len(rows) == len(events) and _queued(log_url) == set()
    assert conns.queue.count == 0

    # Within the grace a publisher may still be about to queue them: left alone.
    run_worker(conns, burst=True, with_scheduler=False)
    assert conns.setlists.verticals() == []

    _age_log(log_url, publishing.SWEEP_GRACE + 5)
    run_worker(conns, burst=True, with_scheduler=False)
    assert failed_jobs(conns) == []
    assert conns.setlists.verticals() == ["band-a", "band-b"]
    assert _queued(log_url) == {e.event_id for e in events}
    assert log_batches_left(log_url) == 0
    assert verify(conns, publishing.event_log(conns)) == []


def test_a_running_worker_sweeps_again_and_again(
    backend: Backend, log_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conns = make_conns(backend, log_url)
    log = publishing.event_log(conns)
    monkeypatch.setattr(publishing, "SWEEP_GRACE", 0.0)
    sweeper = publishing.Sweeper(conns, interval=0.05)
    sweeper.start()
    try:
        events = random_stream(seed=9, performances=10, videos=0)
        log.append(events)  # logged, never queued
        deadline = time.monotonic() + 20
        while conns.queue.count == 0:
            assert time.monotonic() < deadline, "the sweeper never queued the logged events"
            time.sleep(0.05)
    finally:
        sweeper.stop()
        sweeper.join(timeout=10)
    assert not sweeper.is_alive()
    run_worker(conns, burst=True, with_scheduler=False)
    assert verify(conns, log) == []


def _age_log(url: str, seconds: float) -> None:
    """Make every row and batch look logged ``seconds`` earlier (time passing after a crash)."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for seq, logged in conn.execute(sa.select(event_log.c.seq, event_log.c.logged_at)):
                earlier = eventlog.as_utc(logged) - dt.timedelta(seconds=seconds)
                conn.execute(
                    event_log.update().where(event_log.c.seq == seq).values(logged_at=earlier)
                )
            for batch, logged in conn.execute(sa.select(log_batches.c.id, log_batches.c.logged_at)):
                earlier = eventlog.as_utc(logged) - dt.timedelta(seconds=seconds)
                conn.execute(
                    log_batches.update().where(log_batches.c.id == batch).values(logged_at=earlier)
                )
    finally:
        engine.dispose()


class _QueueThatFails:
    """Takes ``good`` jobs, then fails as a queue whose Redis went away does."""

    def __init__(self, good: int) -> None:
        self.good = good
        self.jobs: list[Any] = []

    def enqueue_many(self, jobs: list[Any]) -> None:
        if len(self.jobs) >= self.good:
            raise ConnectionError("the queue is gone")
        self.jobs.extend(jobs)


@pytest.mark.parametrize("good", [0, 1, 3, 5])
def test_every_queued_batch_is_marked_and_no_other(log_url: str, good: int) -> None:
    """Batches are marked queued one write late (with the next batch, the queue here
    answering at once), never early."""
    events = random_stream(seed=12, performances=40, videos=6)[:46]  # 5 batches
    log = EventLog(log_url)
    queue = _QueueThatFails(good)
    publisher = Publisher(queue, batch_size=10, sink=log)  # type: ignore[arg-type]
    if good < 5:
        with pytest.raises(ConnectionError):
            publisher.publish(events)
    else:
        assert publisher.publish(events).jobs == 5
    rows = {row["event_id"] for row in _rows(log_url)}
    queued = {e.event_id for e in events[: 10 * good]}
    logged = {e.event_id for e in events[: 10 * min(good + 1, 5)]}
    assert rows == logged
    assert _queued(log_url) == queued
    log.dispose()


class _Watched(list[Any]):
    """A list of JSON objects that notes how many jobs were queued as each is read."""

    def __init__(self, items: list[Any], queue: _QueueThatFails) -> None:
        super().__init__(items)
        self.queue = queue
        self.seen: list[int] = []

    def __iter__(self) -> Iterator[Any]:
        for item in super().__iter__():
            self.seen.append(len(self.queue.jobs))
            yield item


def test_published_objects_are_queued_batch_by_batch_as_they_are_validated(log_url: str) -> None:
    """A large publish (a benchmark, a big file) has workers busy on its first batch while
    its later events are still being validated, and rejections still name their place."""
    events = random_stream(seed=14, performances=40, videos=0)[:35]
    objects: list[Any] = [e.to_json_dict() for e in events]
    objects.insert(12, {"type": "performance.recorded"})  # rejected, named by its place
    queue = _QueueThatFails(10)
    log = EventLog(log_url)
    watched = _Watched(objects, queue)
    report = Publisher(queue, batch_size=10, sink=log).publish_objects(watched)  # type: ignore[arg-type]
    log.dispose()
    assert report.accepted == 35 and report.jobs == 4
    assert [str(e).split(":")[0] for e in report.rejected] == ["event 12"]
    assert watched.seen[:10] == [0] * 10  # the first batch
    assert watched.seen[10:21] == [1] * 11  # the second and the bad one, after the first is queued
    assert watched.seen[-1] == 3
    assert _queued(log_url) == {e.event_id for e in events}


class _PausingLog:
    """An event log that holds every write of Redis (``CLIENT PAUSE WRITE``) once the
    first batch is logged, and when the second comes notes what the queue holds, does
    ``then`` and lets Redis go."""

    def __init__(self, log: EventLog, raw: Any, queue: Queue, then: Any = None) -> None:
        self.log = log
        self.raw = raw
        self.queue = queue
        self.then = then
        self.appends = 0
        self.queued_at_second: int | None = None

    def append(self, events: Any, bodies: Any = None, enqueued: Any = ()) -> Any:
        self.appends += 1
        if self.appends == 2:
            self.queued_at_second = self.raw.llen(self.queue.key)  # a read: not paused
            if self.then is not None:
                self.then()
            self.raw.execute_command("CLIENT", "UNPAUSE")
        handle = self.log.append(events, bodies, enqueued)
        if self.appends == 1:
            self.raw.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
        return handle

    def mark_enqueued(self, batches: Any) -> None:
        self.log.mark_enqueued(batches)


def _job_records(queue: Queue) -> list[list[Any]]:
    return [job.args[0] for job in queue.jobs]


@pytest.mark.parametrize("drop_connection", [False, True])
def test_the_next_batch_is_logged_while_the_last_one_travels_to_the_queue(
    real_backend: Backend, tmp_path: Path, drop_connection: bool
) -> None:
    """A job's round trip waits behind whatever script Redis is running; the publisher
    reads the reply to a batch only after it has logged the next. Here Redis holds the
    first job (every write paused) while the second batch is logged. A connection lost
    before the reply sends the job again. Every job reaches the queue once, in order,
    and every batch is marked."""
    events = random_stream(seed=18, performances=30, videos=0)[:25]
    log = EventLog(f"sqlite:///{tmp_path / 'log.db'}")
    queue = job_queue(real_backend.queue, real_backend.raw)

    def drop() -> None:
        # Every other connection of the server: the one carrying the first job, held
        # before its EXEC by the pause, so that the job was not queued.
        real_backend.raw.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")

    sink = _PausingLog(log, real_backend.raw, queue, drop if drop_connection else None)
    try:
        report = Publisher(queue, batch_size=10, sink=sink).publish(events)  # type: ignore[arg-type]
    finally:
        real_backend.raw.execute_command("CLIENT", "UNPAUSE")  # whatever happened: Redis is shared
    url = log.url
    log.dispose()
    assert sink.queued_at_second == 0  # the first job still on its way
    assert report.accepted == 25 and report.jobs == 3
    assert _job_records(queue) == [
        [record_of(e) for e in events[start : start + 10]] for start in range(0, 25, 10)
    ]
    assert _queued(url) == {e.event_id for e in events}


def test_an_error_in_the_queue_s_reply_stops_the_publish_and_leaves_the_batch_unmarked(
    real_backend: Backend, tmp_path: Path
) -> None:
    """The queue's list is something else (WRONGTYPE in the reply): the publish raises
    it, the batch stays logged for the sweep, and the client still works."""
    events = random_stream(seed=19, performances=20, videos=0)[:15]
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = EventLog(url)
    queue = job_queue(real_backend.queue, real_backend.raw)
    real_backend.raw.set(queue.key, "not a list")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        Publisher(queue, batch_size=10, sink=log).publish(events)
    log.dispose()
    assert {row["event_id"] for row in _rows(url)} == {e.event_id for e in events}
    assert _queued(url) == set()
    assert real_backend.raw.get(queue.key) == b"not a list"


def test_a_slow_stream_has_its_queued_batch_marked_without_waiting_for_the_next(
    log_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a batch waited MARK_DELAY_SECONDS, the next event that comes marks it."""
    events = random_stream(seed=13, performances=20, videos=0)[:12]
    log = EventLog(log_url)
    clock = [100.0]
    monkeypatch.setattr("events.publisher.time.monotonic", lambda: clock[0])
    seen: dict[int, set[str]] = {}

    def marked() -> set[str]:
        return _queued(log_url)

    def slow() -> Iterator[Any]:
        for i, event in enumerate(events):
            seen[i] = marked()
            if i == 7:
                clock[0] += 0.5  # quick: the first batch still waits for the second's write
            if i == 9:
                clock[0] += publisher_module.MARK_DELAY_SECONDS + 0.5  # slow from here on
            yield event

    Publisher(_QueueThatFails(10), batch_size=4, sink=log).publish(slow())  # type: ignore[arg-type]
    ids = [e.event_id for e in events]
    assert seen[5] == set()  # batch 1 queued, not yet marked
    assert seen[8] == set(ids[:4])  # marked with batch 2's write
    assert seen[9] == set(ids[:4])  # batch 2 queued, waiting
    assert seen[10] == set(ids[:8])  # event 9 came late: batch 2 marked on its own
    assert marked() == set(ids)
    log.dispose()


def test_a_publisher_process_that_cannot_queue_leaves_its_events_to_the_worker(
    real_backend: Backend, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    events = random_stream(seed=11, performances=20, videos=3)
    lines = tmp_path / "events.jsonl"
    lines.write_text("\n".join(json.dumps(e.to_json_dict()) for e in events) + "\n")
    env = {
        **os.environ,
        "STATSWORKER_REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens: the queue is gone
        "STATSWORKER_DATABASE_URL": url,
        "STATSWORKER_KEY_PREFIX": real_backend.prefix,
        "STATSWORKER_QUEUE": real_backend.queue,
    }
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "publish", str(lines)],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0, done.stderr.decode()
    assert len(_rows(url)) == len(events)

    _age_log(url, publishing.SWEEP_GRACE + 5)
    conns = make_conns(real_backend, url)
    run_worker(conns, burst=True, with_scheduler=False)
    assert failed_jobs(conns) == []
    assert verify(conns, publishing.event_log(conns)) == []
    assert conns.videos.creators() == sorted({e.creator for e in events if hasattr(e, "creator")})


def test_rows_never_queued_before_log_batches_existed_are_still_recovered(
    empty_db: str,
) -> None:
    """Migration 0003 keeps the old rows' marks: those never queued stay found, and a
    downgrade turns the rows of batches in flight back into unmarked rows."""
    engine = make_engine(empty_db)
    try:
        migrations.upgrade(engine, "0001_event_log")
        events = random_stream(seed=14, performances=12, videos=2)
        old = sa.Table("event_log", sa.MetaData(), autoload_with=engine)
        with engine.begin() as conn:
            conn.execute(old.insert(), [legacy_row(e, eventlog.utcnow()) for e in events])
            conn.execute(
                old.update().where(old.c.event_id == events[0].event_id), {"enqueued": True}
            )
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    log = EventLog(empty_db)
    later = eventlog.utcnow() + dt.timedelta(seconds=1)
    found = log.unqueued(later)
    assert found.batches == []
    assert {r.body["event_id"] for r in found.rows} == {e.event_id for e in events[1:]}
    assert sorted(found.legacy) == sorted(r.seq for r in found.rows)
    log.settle(found)
    assert _queued(empty_db) == {e.event_id for e in events}
    assert log.unqueued(later).rows == []

    more = [
        e.model_copy(update={"event_id": f"later-{e.event_id}"})
        for e in random_stream(seed=15, performances=6, videos=0)
    ]
    in_flight = log.append(more)
    found = log.unqueued(eventlog.utcnow() + dt.timedelta(seconds=1))
    assert found.batches == [in_flight] and found.legacy == []
    assert {r.body["event_id"] for r in found.rows} == {e.event_id for e in more}
    log.dispose()
    engine = make_engine(empty_db)
    try:
        migrations.upgrade(engine, "0002_setlist_fields")
        with engine.connect() as conn:
            unmarked = conn.execute(
                sa.select(old.c.event_id).where(sa.text("NOT enqueued"))
            ).scalars()
            assert set(unmarked) == {e.event_id for e in more}
    finally:
        engine.dispose()


def test_opening_waits_for_a_writer_instead_of_failing_to_switch_to_wal(tmp_path: Path) -> None:
    """SQLite refuses a journal-mode switch at once, busy timeout or not, while another
    connection holds a write lock (a process migrating the new file): opening waits."""
    path = tmp_path / "busy.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE held (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO held VALUES (1)")
    release = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    release.start()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        release.join()
        engine.dispose()
        writer.close()


def test_an_sqlite_log_is_checkpointed_by_its_own_thread(tmp_path: Path) -> None:
    """The writes reach the database file itself, not just its write-ahead log, while
    the WAL is far below the size at which the writer would checkpoint; disposing of
    the log ends the thread."""
    path = tmp_path / "log.db"
    log = EventLog(f"sqlite:///{path}")
    events = random_stream(seed=3, performances=120, videos=10)
    try:
        previous: list[int] = []
        for start in range(0, len(events), 40):
            batch = log.append(events[start : start + 40], enqueued=previous)
            previous = [batch] if batch is not None else []
        log.mark_enqueued(previous)
        checkpointer = log.checkpointer
        assert checkpointer is not None
        assert checkpointer.settle()
        # A copy of the database file without its WAL holds what was checkpointed.
        alone = tmp_path / "alone.db"
        alone.write_bytes(path.read_bytes())
        copy = sqlite3.connect(alone)
        try:
            stored = copy.execute("SELECT count(*) FROM event_log").fetchone()[0]
            in_flight = copy.execute("SELECT count(*) FROM log_batches").fetchone()[0]
        finally:
            copy.close()
        assert (stored, in_flight) == (len({e.event_id for e in events}), 0)
    finally:
        log.dispose()
    assert not checkpointer.alive
    assert log.checkpointer is None


def test_a_followed_stream_has_its_events_queued_while_it_waits_for_more(
    log_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipe that pauses after three events (``tail -f``): they are logged, queued and
    marked while the publisher still waits for the rest, not when a batch fills."""
    monkeypatch.setattr(publisher_module, "FLUSH_DELAY_SECONDS", 0.2)
    monkeypatch.setattr(publisher_module, "MARK_DELAY_SECONDS", 0.2)
    events = random_stream(seed=16, performances=10, videos=0)[:5]
    lines = [json.dumps(e.to_json_dict()) for e in events]
    more = threading.Event()

    def pipe() -> Iterator[str]:
        yield from lines[:3]
        assert more.wait(30), "the test never let the rest through"
        yield from lines[3:]

    log = EventLog(log_url)
    queue = _QueueThatFails(10)
    publisher = Publisher(queue, batch_size=1000, sink=log)  # type: ignore[arg-type]
    reports: list[Any] = []
    reader = threading.Thread(
        target=lambda: reports.append(publisher.publish_lines(pipe(), follow_stream=True))
    )
    reader.start()
    try:
        first = {e.event_id for e in events[:3]}
        deadline = time.monotonic() + 20
        while _queued(log_url) != first:
            assert time.monotonic() < deadline, "the first three events were never queued"
            time.sleep(0.02)
        assert not more.is_set() and reader.is_alive()  # still waiting for the pipe
        assert [len(job.args[0]) for job in queue.jobs] == [3]
    finally:
        more.set()
        reader.join(timeout=30)
    assert reports[0].accepted == 5 and reports[0].rejected == []
    assert sum(len(job.args[0]) for job in queue.jobs) == 5
    assert _queued(log_url) == {e.event_id for e in events}
    log.dispose()


def test_following_a_stream_hands_over_its_error() -> None:
    def broken() -> Iterator[str]:
        yield "first"
        raise OSError("the pipe broke")

    got: list[Any] = []
    with pytest.raises(OSError, match="the pipe broke"):
        for item in publisher_module.follow(broken(), every=0.01):
            got.append(item)
    assert [item for item in got if item is not publisher_module.IDLE] == ["first"]


@st.composite
def written_instants(draw: st.DrawFn) -> str:
    """An RFC 3339 timestamp as an event may write it: any separator, case, fraction and
    offset, Z (either case) half of the time."""
    moment = draw(st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)))
    digits = draw(st.integers(0, 9))
    fraction = "." + draw(st.text("0123456789", min_size=digits, max_size=digits)) if digits else ""
    minutes = draw(st.integers(-23 * 60 - 59, 23 * 60 + 59))
    sign, (hours, mins) = "+-"[minutes < 0], divmod(abs(minutes), 60)
    offset = draw(st.sampled_from(["Z", "z", f"{sign}{hours:02d}:{mins:02d}"]))
    sep = draw(st.sampled_from("Tt "))
    day = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    return f"{day}{sep}{moment:%H:%M:%S}{fraction}{offset}"


@given(text=written_instants())
@settings(max_examples=300)
def test_an_instant_is_logged_in_sqlite_as_sqlalchemy_stores_it_from_its_text_too(
    text: str,
) -> None:
    value = TypeAdapter(Timestamp).validate_python(text)
    dialect = sa.create_engine("sqlite://").dialect
    stored = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert stored is not None
    want = stored(value.astimezone(dt.UTC).replace(tzinfo=None))
    assert sqlite_time(value) == want
    assert sqlite_time(value, text) == want


def _scope_index_sql(conn: sa.Connection, name: str) -> str:
    if conn.dialect.name == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?"
    else:
        query = (
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s AND schemaname = current_schema()"
        )
    return str(conn.exec_driver_sql(query, (name,)).scalar_one())


def _plan(conn: sa.Connection, column: str) -> str:
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN SELECT seq FROM event_log WHERE {column} = ?", ("x",)
        )
        return " ".join(str(row[-1]) for row in rows)
    conn.exec_driver_sql("SET enable_seqscan = off")
    rows = conn.exec_driver_sql(f"EXPLAIN SELECT seq FROM event_log WHERE {column} = %s", ("x",))
    return " ".join(str(row[0]) for row in rows)


def test_the_scope_indexes_leave_out_rows_without_that_scope_and_serve_its_reads(
    empty_db: str,
) -> None:
    """Migration 0004 makes the vertical and creator indexes partial; the reads by a
    vertical or a creator still use them, and a downgrade and upgrade keep every row."""
    events = random_stream(seed=21, performances=40, videos=8)
    log = EventLog(empty_db, migrate=True)
    log.append(events)
    log.dispose()
    before = _rows(empty_db)
    engine = make_engine(empty_db)
    try:
        command.downgrade(migrations.alembic_config(engine), "0003_log_batches")
        with engine.connect() as conn:
            assert "NOT NULL" not in _scope_index_sql(conn, "ix_event_log_vertical")
        migrations.upgrade(engine)
        assert _rows(empty_db) == before
        with engine.connect() as conn:
            for column in ("vertical", "creator"):
                name = f"ix_event_log_{column}"
                found = _scope_index_sql(conn, name)
                assert f"{column} IS NOT NULL" in found.replace("(", "").replace(")", ""), found
                assert name in _plan(conn, column)
    finally:
        engine.dispose()
    log = EventLog(empty_db)
    try:
        vertical = events[0].vertical  # type: ignore[union-attr]
        assert sum(len(part) for part in log.iter_performances(vertical)) == sum(
            1 for row in before if row["vertical"] == vertical
        )
        assert log.creators() == sorted({row["creator"] for row in before if row["creator"]})
    finally:
        log.dispose()


@pytest.mark.parametrize("field", ["venue", "set", "hook", "cta"])
def test_a_nul_in_free_text_is_refused_on_every_log_and_the_batch_goes_on(
    backend: Backend, log_url: str, field: str
) -> None:
    """PostgreSQL's JSONB cannot hold U+0000: the event is refused by name, not the batch."""
    conns = make_conns(backend, log_url)
    base: dict[str, Any] = (
        {
            "type": "performance.recorded",
            "vertical": "band",
            "performance_id": "p",
            "show_id": "s1",
            "show_date": "2024-05-01",
            "song": "tune",
        }
        if field in ("venue", "set")
        else {
            "type": "video.posted",
            "creator": "ann",
            "video_id": "v",
            "date_posted": "2024-05-01",
            **dict.fromkeys(("views", "likes", "comments", "shares", "bookmarks"), 1),
            "new_followers": 0,
        }
    )
    bodies = [
        {**base, "event_id": f"e{i}", "occurred_at": "2024-05-01T20:00:00Z", field: text}
        for i, text in enumerate(["before", "The \x00 Club", "after"])
    ]
    report = publishing.make_publisher(conns).publish_objects(bodies)
    assert report.accepted == 2
    assert [str(e) for e in report.rejected] == [
        f"event_id 'e1': {field}: must not contain the NUL character (U+0000)"
    ]
    assert sorted(r["event_id"] for r in _rows(log_url)) == ["e0", "e2"]
