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
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from events.schemas import (
    Event,
    PerformanceRecorded,
    PerformanceRetracted,
    parse_event,
)
from worker.migrations import SchemaNotReady, ensure_schema

log = logging.getLogger(__name__)

REPLAY_BATCH = 5000
"""Rows fetched from the database at a time when the log is read back."""

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long an SQLite writer waits for another process's write lock before failing."""

metadata = sa.MetaData()

Body = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only

event_log = sa.Table(
    "event_log",
    metadata,
    sa.Column("seq", Seq, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("type", sa.String(40), nullable=False),
    sa.Column("vertical", sa.String(128), nullable=True),
    sa.Column("creator", sa.String(128), nullable=True),
    sa.Column("entity_id", sa.String(200), nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("version", sa.String(240), nullable=False),
    sa.Column("body", Body, nullable=False),
    sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("enqueued", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("event_id", name="uq_event_log_event_id"),
    sa.Index("ix_event_log_vertical", "vertical", "entity_id"),
    sa.Index("ix_event_log_creator", "creator", "entity_id"),
    sa.Index(
        "ix_event_log_pending",
        "logged_at",
        postgresql_where=sa.text("NOT enqueued"),
        sqlite_where=sa.text("NOT enqueued"),
    ),
)
"""One row per distinct accepted event (the first one stored wins on a repeated id)."""


@dataclass(frozen=True)
class Recent:
    """Rows stored after a point: ``seq`` above a mark, or logged at or after a time."""

    after_seq: int
    logged_since: dt.datetime

    def condition(self) -> sa.ColumnElement[bool]:
        """The SQL condition."""
        return sa.or_(event_log.c.seq > self.after_seq, event_log.c.logged_at >= self.logged_since)


class PerformanceRow(NamedTuple):
    """What the setlist state needs of a logged performance event."""

    seq: int
    performance_id: str
    version: str
    recorded: bool
    song: str | None
    show_id: str | None
    show_date: str | None
    song_title: str | None
    recent: bool


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
    recent: bool = False
    """Whether the row matched ``iter_events``' ``recent`` condition."""

    def event(self) -> Event:
        """The event, validated again (it was valid when it was logged)."""
        return parse_event(self.body)


def _scope(event: Event) -> tuple[str | None, str | None, str]:
    if isinstance(event, PerformanceRecorded | PerformanceRetracted):
        return event.vertical, None, event.performance_id
    return None, event.creator, event.video_id


def _row(event: Event, now: dt.datetime) -> dict[str, Any]:
    vertical, creator, entity_id = _scope(event)
    return {
        "event_id": event.event_id,
        "type": event.type,
        "vertical": vertical,
        "creator": creator,
        "entity_id": entity_id,
        "occurred_at": event.occurred_at.astimezone(dt.UTC),
        "version": event.version,
        "body": event.to_json_dict(),
        "logged_at": now,
        "enqueued": False,
    }


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
        if not memory:
            # Readers (rebuild, verify) then never block the publishers' writes.
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    return engine


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
        if migrate is None:
            migrate = self.dialect == "sqlite"
        try:
            ensure_schema(self.engine, upgrade=migrate)
        except Exception:
            if engine is None:
                self.engine.dispose()
            raise

    # -- writing ----------------------------------------------------------------

    def _insert(self) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(event_log).on_conflict_do_nothing(index_elements=["event_id"])
        if self.dialect == "sqlite":
            return sqlite.insert(event_log).on_conflict_do_nothing(index_elements=["event_id"])
        raise SchemaNotReady(f"unsupported database {self.dialect!r}: use PostgreSQL or SQLite")

    def append(self, events: Sequence[Event]) -> None:
        """Store events durably in one transaction; an event_id already stored is kept."""
        if not events:
            return
        now = utcnow()
        rows = [_row(event, now) for event in events]
        with self.engine.begin() as conn:
            conn.execute(self._insert(), rows)

    def mark_enqueued(self, events: Sequence[Event]) -> None:
        """Record that these events reached the queue, so recovery leaves them alone."""
        ids = [event.event_id for event in events]
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                event_log.update()
                .where(event_log.c.event_id.in_(ids), event_log.c.enqueued.is_(False))
                .values(enqueued=True)
            )

    # -- reading ----------------------------------------------------------------

    def pending(self, logged_before: dt.datetime, limit: int = 10_000) -> list[LoggedEvent]:
        """Events logged before ``logged_before`` that never reached the queue, oldest first."""
        query = (
            self._select()
            .where(event_log.c.enqueued.is_(False), event_log.c.logged_at < logged_before)
            .order_by(event_log.c.logged_at, event_log.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [self._logged(row) for row in conn.execute(query)]

    @staticmethod
    def _select() -> sa.Select[Any]:
        c = event_log.c
        return sa.select(c.seq, c.type, c.vertical, c.creator, c.entity_id, c.version, c.body)

    @staticmethod
    def _logged(row: Any) -> LoggedEvent:
        seq, kind, vertical, creator, entity_id, version, body = row[:7]
        recent = bool(row[7]) if len(row) > 7 else False
        return LoggedEvent(seq, kind, vertical, creator, entity_id, version, body, recent)

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
        recent: Recent | None = None,
        batch: int = REPLAY_BATCH,
    ) -> Iterator[list[LoggedEvent]]:
        """Read the log back in batches (of one vertical or creator when given).

        Args:
            recent: marks the rows stored after that point (``LoggedEvent.recent``).
        """
        query = self._scoped(self._select(), vertical, creator)
        if recent is not None:
            query = query.add_columns(recent.condition().label("recent"))
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
            for part in result.partitions(batch):
                yield [self._logged(row) for row in part]

    def iter_performances(
        self, vertical: str, recent: Recent, batch: int = REPLAY_BATCH
    ) -> Iterator[Sequence[PerformanceRow]]:
        """A vertical's rows with the fields its setlist state needs, read by the database
        out of the JSON body: the fast path of ``rebuild`` (no JSON decoding in Python,
        and the rows come as the driver makes them, shaped like :class:`PerformanceRow`).
        """
        c, body = event_log.c, event_log.c.body
        columns = (
            c.seq,
            c.entity_id,
            c.version,
            c.type == "performance.recorded",
            body["song"].as_string(),
            body["show_id"].as_string(),
            body["show_date"].as_string(),
            body["song_title"].as_string(),
            recent.condition(),
        )
        query = sa.select(
            *(col.label(name) for col, name in zip(columns, PerformanceRow._fields, strict=True))
        ).where(c.vertical == vertical)
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
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

    def recent_seqs(
        self, recent: Recent, vertical: str | None = None, creator: str | None = None
    ) -> list[int]:
        """``seq`` of the rows (of one vertical or creator) stored after ``recent``'s point."""
        query = self._scoped(sa.select(event_log.c.seq), vertical, creator).where(
            recent.condition()
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

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
        """Close every pooled connection."""
        self.engine.dispose()


__all__ = ["EventLog", "LoggedEvent", "SchemaNotReady", "event_log", "open_log"]

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
