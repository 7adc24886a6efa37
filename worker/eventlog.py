"""The durable event log: every accepted event is stored here before it is queued.

Redis holds the live state, the log holds what was acknowledged. ``rebuild`` and
``verify`` read it; the publisher writes it (``events.publisher.EventSink``).

The log is one table, ``event_log``, managed by the Alembic migrations in
``worker/migrations``. An SQLite log is migrated automatically when it is opened, so
the embedded default just works; any other database (PostgreSQL in production) is
migrated by ``statsworker migrate``, and opening a log whose schema is behind fails
with a message that says so: a fleet of publishers must not race to alter a shared
production schema.
"""

from __future__ import annotations

import datetime as dt
import logging
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from events.schemas import Event, parse_event
from worker.log_table import (
    COLUMNS,
    FIELD_SEP,
    PENDING,
    PERFORMANCES_QUERY,
    PerformanceRow,
    driver_row,
    event_log,
    log_batches,
    metadata,
    setlist_fields,
    sqlite_time,
)
from worker.migrations import SchemaNotReady, ensure_schema

log = logging.getLogger(__name__)

REPLAY_BATCH = 5000
"""Rows fetched from the database at a time when the log is read back."""

MARK_CHUNK = 1000
"""Ids per statement that marks batches or rows queued (well under every driver's limit)."""

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long an SQLite writer waits for another process's write lock before failing."""


@dataclass(frozen=True)
class LoggedEvent:
    """A row of the log as replay reads it."""

    seq: int
    type: str
    vertical: str | None
    creator: str | None
    entity_id: str
    version: str
    body: dict[str, Any]

    def event(self) -> Event:
        """The event, validated again (it was valid when it was logged)."""
        return parse_event(self.body)


@dataclass(frozen=True)
class Unqueued:
    """Logged events not known to have reached the queue (what the sweep queues again)."""

    rows: list[LoggedEvent]
    batches: list[int]
    """``log_batches`` ids of the in-flight batches whose rows are among ``rows``."""
    legacy: list[int]
    """``seq`` of the rows among ``rows`` logged before ``log_batches`` existed."""


LOG_ERRORS = (sa.exc.DBAPIError, sa.exc.TimeoutError, SchemaNotReady)
"""What opening or writing the log may raise; :func:`log_unusable` tells them apart."""


def log_unusable(exc: BaseException) -> bool:
    """Whether ``exc`` says the log cannot be used for now (unreachable, refused, a file
    that is not a database, no connection free in the pool, a schema behind), rather
    than a bug such as an IntegrityError or a ProgrammingError."""
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    if isinstance(exc, sa.exc.DatabaseError):
        return type(exc) is sa.exc.DatabaseError  # as such: SQLite's "file is not a database"
    return isinstance(exc, sa.exc.TimeoutError | SchemaNotReady)


def utcnow() -> dt.datetime:
    """The current time, aware, in UTC (every time in the log is UTC)."""
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """A time read back from the log as an aware UTC time (SQLite returns it naive)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and a shared in-memory DB."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    memory = url in ("sqlite://", "sqlite:///:memory:")
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        poolclass=StaticPool if memory else None,
    )

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if not memory:
            # Readers (rebuild, verify) then never block the publishers' writes.
            _wal(cur)
        cur.close()

    return engine


def _wal(cur: Any) -> None:
    """Put the file in WAL mode, waiting out other processes' locks. Switching needs the
    file to itself, and SQLite refuses at once, without its busy timeout, where waiting
    could deadlock: seen when four processes opened one new log together while one of
    them migrated it."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Checkpointer:
    """Copies an SQLite log's write-ahead log back into its database file from a thread of
    its own, beside the writer.

    SQLite does this in the writing thread after a commit once the WAL holds 1,000
    pages, and while the publisher writes, that copy (and its disk flushes) is about a
    fifth of what an insert costs it: 9.8-10.8 -> 8.2-9.3 us of the writing thread's
    CPU an event, wall 11.6-14.2 -> 9.1-10.6, in one-off timings of 106,275 real rows in
    batches of 1,000. A passive checkpoint neither waits for the writer nor blocks it,
    and SQLite releases the GIL while it runs. The writer's own automatic checkpoint
    stays as it was: if this thread falls behind or fails, the WAL is still bounded.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        """The process the thread runs in (a forked child has none of it)."""
        self._wanted = threading.Condition()
        self._asked = self._done = 0
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name="statsworker-log-checkpoint", daemon=True
        )
        self._thread.start()

    def kick(self) -> None:
        """Ask for a checkpoint (after a commit); returns at once."""
        with self._wanted:
            self._asked += 1
            self._wanted.notify()

    def settle(self, timeout: float = 30.0) -> bool:
        """Ask for a checkpoint and wait until one that began after this call is done;
        False when none finished within ``timeout`` seconds (or the thread is gone)."""
        with self._wanted:
            self._asked += 1
            target = self._asked
            self._wanted.notify()
            return (
                self._wanted.wait_for(
                    lambda: self._done >= target or not self._thread.is_alive(), timeout
                )
                and self._done >= target
            )

    def stop(self) -> None:
        """End the thread after the checkpoint it may be running."""
        with self._wanted:
            self._stopping = True
            self._wanted.notify()
        self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error:
            log.warning("log %s: no checkpoint thread", self.path, exc_info=True)
            return
        try:
            while True:
                with self._wanted:
                    self._wanted.wait_for(lambda: self._stopping or self._asked > self._done)
                    if self._stopping:
                        return
                    target = self._asked
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # the writer's own checkpoint still bounds the WAL
                    log.warning("log %s: checkpoint failed", self.path, exc_info=True)
                with self._wanted:
                    self._done = target
                    self._wanted.notify_all()
        finally:
            conn.close()


def sqlite_file(url: sa.URL) -> str | None:
    """The database file of an SQLite URL (None for memory, URIs, other databases).
    Without ``uri=true`` SQLite takes a name such as ``file:x.db`` as a file name."""
    if url.get_backend_name() != "sqlite" or url.query.get("uri"):
        return None
    database = url.database
    if not database or database == ":memory:":
        return None
    return database


_event_id = operator.itemgetter(COLUMNS.index("event_id"))


class EventLog:
    """The event log in a SQL database (SQLAlchemy 2): append, mark, read back."""

    def __init__(self, url: str, engine: Engine | None = None, migrate: bool | None = None) -> None:
        """Open the log at ``url``.

        Args:
            url: a SQLAlchemy URL, e.g. ``sqlite:///events.db`` or
                ``postgresql+psycopg://user@host/db``.
            engine: an engine to use instead of making one from ``url``.
            migrate: bring the schema to the latest migration when it is behind;
                by default only for SQLite (see the module docstring).

        Raises:
            SchemaNotReady: the schema is behind and ``migrate`` is false.
        """
        self.url = url
        self.engine = engine or make_engine(url)
        self.dialect = self.engine.dialect.name
        self._checkpoint_path = sqlite_file(self.engine.url)
        self.checkpointer: Checkpointer | None = None
        """Started by the first write to an SQLite file (:class:`Checkpointer`)."""
        self._checkpointer_lock = threading.Lock()
        if migrate is None:
            migrate = self.dialect == "sqlite"
        try:
            ensure_schema(self.engine, upgrade=migrate)
        except Exception:
            if engine is None:
                self.engine.dispose()
            raise

    # -- writing ----------------------------------------------------------------

    def _insert_sql(self) -> str:
        columns = ", ".join(COLUMNS)
        if self.dialect == "postgresql":
            values = ", ".join("CAST(%s AS JSONB)" if c == "body" else "%s" for c in COLUMNS)
        elif self.dialect == "sqlite":
            values = ", ".join("?" for _ in COLUMNS)
        else:
            raise SchemaNotReady(f"unsupported database {self.dialect!r}: use PostgreSQL or SQLite")
        return (
            f"INSERT INTO event_log ({columns}) VALUES ({values}) ON CONFLICT (event_id) DO NOTHING"
        )

    def append(
        self,
        events: Sequence[Event],
        bodies: Sequence[Any] | None = None,
        enqueued: Sequence[int] = (),
    ) -> int | None:
        """Store events durably in one transaction, as one batch in flight; an event_id
        already stored is kept.

        Args:
            events: validated events.
            bodies: the same events as the JSON objects they arrived in, stored
                as ``Event.logged_body`` has them; by default each ``to_json_dict``.
            enqueued: batches appended earlier that have reached the queue since, marked
                so in the same transaction (see :meth:`mark_enqueued`): one commit,
                and so one disk flush, per batch instead of two.

        Returns:
            The new batch's id, for :meth:`mark_enqueued` once it is queued (None when
            ``events`` is empty).
        """
        if not events:
            self.mark_enqueued(enqueued)
            return None
        sqlite_times = self.dialect == "sqlite"
        now: Any = utcnow()
        if sqlite_times:
            now = sqlite_time(now)
        if bodies is None:
            bodies = [event.to_json_dict() for event in events]
        else:
            bodies = [event.logged_body(body) for event, body in zip(events, bodies, strict=True)]
        rows = [
            driver_row(event, body, now, sqlite_times)
            for event, body in zip(events, bodies, strict=True)
        ]
        if not sqlite_times:
            # In event_id order, so that two appends of overlapping events take the
            # unique index's locks in one order: in their own orders, each could wait
            # for an id the other inserted first, and PostgreSQL would abort one of them
            # as a deadlock (4 of 5 times for 400 events sent both ways at once).
            # SQLite lets one writer in at a time.
            rows.sort(key=_event_id)
        mark = "?" if sqlite_times else "%s"
        with self.engine.begin() as conn:
            batch = conn.exec_driver_sql(
                f"INSERT INTO log_batches (logged_at) VALUES ({mark}) RETURNING id", (now,)
            ).scalar_one()
            conn.exec_driver_sql(self._insert_sql(), [(*row, batch) for row in rows])
            if enqueued:
                self._settle(conn, enqueued, [])
        self._committed()
        return int(batch)

    def _committed(self) -> None:
        """After a write: have the checkpoint thread copy the WAL back (SQLite files)."""
        if self._checkpoint_path is None:
            return
        checkpointer = self.checkpointer
        if checkpointer is None or checkpointer.pid != os.getpid():
            with self._checkpointer_lock:
                checkpointer = self.checkpointer
                if checkpointer is None or checkpointer.pid != os.getpid():
                    checkpointer = self.checkpointer = Checkpointer(self._checkpoint_path)
        checkpointer.kick()

    def mark_enqueued(self, batches: Sequence[int]) -> None:
        """Record that the batches :meth:`append` returned reached the queue, so recovery
        leaves their events alone (marking twice is harmless)."""
        if batches:
            with self.engine.begin() as conn:
                self._settle(conn, batches, [])
            self._committed()

    def settle(self, found: Unqueued) -> None:
        """Record that the events :meth:`unqueued` found have been queued again."""
        with self.engine.begin() as conn:
            self._settle(conn, found.batches, found.legacy)

    def _settle(self, conn: sa.Connection, batches: Sequence[int], legacy: Sequence[int]) -> None:
        mark = "?" if self.dialect == "sqlite" else "%s"
        for ids, statement in (
            (batches, "DELETE FROM log_batches WHERE id IN ({})"),
            (legacy, f"UPDATE event_log SET enqueued = TRUE WHERE {PENDING} AND seq IN ({{}})"),
        ):
            for start in range(0, len(ids), MARK_CHUNK):
                chunk = tuple(ids[start : start + MARK_CHUNK])
                conn.exec_driver_sql(statement.format(", ".join([mark] * len(chunk))), chunk)

    # -- reading ----------------------------------------------------------------

    def unqueued(self, logged_before: dt.datetime, limit: int = 10_000) -> Unqueued:
        """Events logged before ``logged_before`` and not known to have reached the queue:
        the rows of batches still in flight, oldest batch first, then rows of the first
        schemas never marked queued; about ``limit`` rows (whole batches)."""
        rows: list[LoggedEvent] = []
        batches: list[int] = []
        with self.engine.connect() as conn:
            stale = (
                conn.execute(
                    sa.select(log_batches.c.id)
                    .where(log_batches.c.logged_at < logged_before)
                    .order_by(log_batches.c.id)
                    .limit(limit)
                )
                .scalars()
                .all()
            )
            for batch in stale:
                if len(rows) >= limit:
                    break
                query = self._select().where(event_log.c.batch == batch).order_by(event_log.c.seq)
                rows.extend(self._logged(row) for row in conn.execute(query))
                batches.append(int(batch))
            legacy: list[LoggedEvent] = []
            if len(rows) < limit:
                query = (
                    self._select()
                    .where(sa.text(PENDING), event_log.c.logged_at < logged_before)
                    .order_by(event_log.c.logged_at, event_log.c.seq)
                    .limit(limit - len(rows))
                )
                legacy = [self._logged(row) for row in conn.execute(query)]
        return Unqueued(rows + legacy, batches, [row.seq for row in legacy])

    @staticmethod
    def _select() -> sa.Select[Any]:
        c = event_log.c
        return sa.select(c.seq, c.type, c.vertical, c.creator, c.entity_id, c.version, c.body)

    @staticmethod
    def _logged(row: Any) -> LoggedEvent:
        return LoggedEvent(*row)

    def _scoped(
        self, query: sa.Select[Any], vertical: str | None, creator: str | None
    ) -> sa.Select[Any]:
        if vertical is not None:
            query = query.where(event_log.c.vertical == vertical)
        if creator is not None:
            query = query.where(event_log.c.creator == creator)
        return query

    def iter_events(
        self,
        vertical: str | None = None,
        creator: str | None = None,
        batch: int = REPLAY_BATCH,
    ) -> Iterator[list[LoggedEvent]]:
        """Read the log back in batches (of one vertical or creator when given)."""
        query = self._scoped(self._select(), vertical, creator)
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
            for part in result.partitions(batch):
                yield [self._logged(row) for row in part]

    def iter_performances(
        self, vertical: str, batch: int = REPLAY_BATCH
    ) -> Iterator[Sequence[PerformanceRow]]:
        """A vertical's rows as the setlist state needs them: the fast path of ``rebuild``
        (plain SQL text, no JSON decoded, rows as the driver makes them, shaped like
        :class:`PerformanceRow`; a third of the cost of the same query built with Core)."""
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(
                PERFORMANCES_QUERY, {"vertical": vertical}
            )
            for part in result.partitions(batch):
                yield cast("Sequence[PerformanceRow]", part)

    def events_at(self, seqs: Sequence[int]) -> list[LoggedEvent]:
        """The rows with these ``seq`` numbers."""
        out: list[LoggedEvent] = []
        for start in range(0, len(seqs), 1000):
            query = self._select().where(event_log.c.seq.in_(seqs[start : start + 1000]))
            with self.engine.connect() as conn:
                out.extend(self._logged(row) for row in conn.execute(query))
        return out

    def first_seq_since(self, logged_since: dt.datetime) -> int | None:
        """The smallest ``seq`` of the rows logged at or after ``logged_since``."""
        query = sa.select(sa.func.min(event_log.c.seq)).where(event_log.c.logged_at >= logged_since)
        with self.engine.connect() as conn:
            found = conn.execute(query).scalar()
            return None if found is None else int(found)

    def seqs_from(
        self, first: int, vertical: str | None = None, creator: str | None = None
    ) -> list[int]:
        """``seq`` of the rows (of one vertical or creator) numbered ``first`` or more."""
        query = self._scoped(sa.select(event_log.c.seq), vertical, creator)
        with self.engine.connect() as conn:
            return list(conn.execute(query.where(event_log.c.seq >= first)).scalars())

    def count_from(
        self, first: int, vertical: str | None = None, creator: str | None = None
    ) -> int:
        """How many rows (of one vertical or creator) are numbered ``first`` or more."""
        query = self._scoped(sa.select(sa.func.count()).select_from(event_log), vertical, creator)
        with self.engine.connect() as conn:
            return int(conn.execute(query.where(event_log.c.seq >= first)).scalar_one())

    def count(self, vertical: str | None = None, creator: str | None = None) -> int:
        """Events in the log (of one vertical or creator when given)."""
        query = self._scoped(sa.select(sa.func.count()).select_from(event_log), vertical, creator)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def max_seq(self) -> int:
        """The greatest ``seq`` stored so far (0 for an empty log)."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(event_log.c.seq))).scalar() or 0)

    def verticals(self) -> list[str]:
        """Every vertical with at least one event, sorted."""
        return self._distinct(event_log.c.vertical)

    def creators(self) -> list[str]:
        """Every creator with at least one event, sorted."""
        return self._distinct(event_log.c.creator)

    def _distinct(self, column: sa.Column[Any]) -> list[str]:
        query = sa.select(column).where(column.is_not(None)).distinct()
        with self.engine.connect() as conn:
            return sorted(conn.execute(query).scalars())

    def dispose(self) -> None:
        """Stop the checkpoint thread and close every pooled connection."""
        with self._checkpointer_lock:
            if self.checkpointer is not None and self.checkpointer.pid == os.getpid():
                self.checkpointer.stop()
            self.checkpointer = None
        self.engine.dispose()


__all__ = [
    "FIELD_SEP",
    "EventLog",
    "LoggedEvent",
    "PerformanceRow",
    "SchemaNotReady",
    "Unqueued",
    "event_log",
    "metadata",
    "open_log",
    "setlist_fields",
]

_open: dict[str, EventLog] = {}
_open_lock = threading.Lock()


def open_log(url: str) -> EventLog:
    """The process's log at ``url``, opened (and for SQLite, migrated) on first use."""
    with _open_lock:
        found = _open.get(url)
        if found is None:
            found = _open[url] = EventLog(url)
        return found


def close_all() -> None:
    """Dispose of every log opened by :func:`open_log` (tests, and processes that fork)."""
    with _open_lock:
        for opened in _open.values():
            opened.dispose()
        _open.clear()
