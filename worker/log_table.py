"""The event log's table, and how an event becomes one of its rows.

The Alembic migrations in ``worker/migrations`` create exactly this table (a test
compares them); ``worker.eventlog`` reads and writes it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from events.schemas import Event, PerformanceRecorded, PerformanceRetracted

metadata = sa.MetaData()

PENDING = "NOT enqueued"
"""Rows logged before ``log_batches`` existed (migration 0003) and not known to have
reached the queue. The sweep's query says it in these very words, so that SQLite, which
matches a partial index's condition by its text, uses ``ix_event_log_pending`` instead of
reading the whole log every 30 seconds. Newer rows are written with ``enqueued`` true:
their batch's row in ``log_batches`` says whether they reached the queue."""

Body = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only


def _scope_index(column: str) -> sa.Index:
    """The index of the rows of one vertical (or creator), by entity. Only the rows that
    have one: the queries name one, which implies it is not NULL, and the other kind of
    event then adds nothing to the index (migration 0004)."""
    where = sa.text(f"{column} IS NOT NULL")
    return sa.Index(
        f"ix_event_log_{column}",
        column,
        "entity_id",
        postgresql_where=where,
        sqlite_where=where,
    )


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
    sa.Column("fields", sa.Text(), nullable=True),
    sa.Column("batch", sa.BigInteger(), nullable=True),
    sa.UniqueConstraint("event_id", name="uq_event_log_event_id"),
    _scope_index("vertical"),
    _scope_index("creator"),
    sa.Index(
        "ix_event_log_pending",
        "logged_at",
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    ),
    sa.Index("ix_event_log_batch", "batch"),
)
"""One row per distinct accepted event (the first one stored wins on a repeated id).

``fields`` repeats, for a ``performance.recorded``, the four body fields its setlist
state depends on (song, show_id, show_date, song_title or empty) joined by the byte
0x1F, which no field can hold: a rebuild reads them without decoding any JSON, which
halves the time it spends reading. It is written with the row and never changes.

``batch`` is the ``log_batches`` id of the publish that first stored the row."""

log_batches = sa.Table(
    "log_batches",
    metadata,
    sa.Column("id", Seq, primary_key=True, autoincrement=True),
    sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
    sqlite_autoincrement=True,  # an id is never used twice, even after its row is deleted
)
"""Batches logged and not yet known to be queued: a publisher inserts one row with each
batch it logs and deletes it once the batch is known to be on the queue (in a later batch's
transaction), so marking a batch queued is one small write instead of an update of
each of its rows. The rows of a batch still here after ``SWEEP_GRACE`` are queued
again by the workers' sweep."""

FIELD_SEP = "\x1f"
"""Separates the values of ``event_log.fields``."""

PERFORMANCES_QUERY = sa.text(
    "SELECT seq, entity_id, version, type = 'performance.recorded', fields"
    " FROM event_log WHERE vertical = :vertical"
)
"""A vertical's rows as a rebuild reads them (see ``PerformanceRow``): plain SQL text,
which SQLAlchemy runs at a third of the cost of the same query built with Core."""


class PerformanceRow(NamedTuple):
    """What the setlist state needs of a logged performance event."""

    seq: int
    performance_id: str
    version: str
    recorded: bool
    fields: str | None
    """``event_log.fields``: song, show_id, show_date, song_title (or empty), 0x1F-joined."""


_SETLIST_EVENTS = (PerformanceRecorded, PerformanceRetracted)


def setlist_fields(event: Event) -> str | None:
    """The value of ``event_log.fields`` for ``event``."""
    if not isinstance(event, PerformanceRecorded):
        return None
    sep, day = FIELD_SEP, event.show_date.isoformat()
    return f"{event.song}{sep}{event.show_id}{sep}{day}{sep}{event.song_title or ''}"


COLUMNS = (
    "event_id",
    "type",
    "vertical",
    "creator",
    "entity_id",
    "occurred_at",
    "version",
    "body",
    "logged_at",
    "enqueued",
    "fields",
    "batch",
)
"""The columns a new row is written with: those of :func:`driver_row`, then ``batch``."""


def sqlite_time(value: dt.datetime, text: Any = None) -> str:
    """An aware time as SQLAlchemy's SQLite ``DateTime`` stores it: UTC, to the microsecond.

    ``text``, when given, is ``value`` as the event wrote it (RFC 3339, validated); one in
    UTC (``Z``) is cut into shape directly, at a third of the cost of formatting ``value``
    (one per logged event).
    """
    if isinstance(text, str) and text[-1:] in ("Z", "z") and len(text) >= 20:
        return f"{text[:10]} {text[11:19]}.{text[20:-1][:6]:0<6}"
    if value.utcoffset():
        value = value.astimezone(dt.UTC)
    return value.isoformat(sep=" ", timespec="microseconds")[:26]


def driver_row(event: Event, body: Any, now: Any, sqlite_times: bool) -> tuple[Any, ...]:
    """The row storing ``event`` as the database driver takes it, in :data:`COLUMNS` order
    but for ``batch``, the last, which ``EventLog.append`` adds once the batch has its id.

    Written by ``EventLog.append`` with one ``executemany``: a third of the cost of the
    same insert through SQLAlchemy Core, which processes every value of every row.

    Args:
        event: the validated event.
        body: the event as a JSON object (as it arrived, or ``to_json_dict``).
        now: the logging time, already in the form the driver takes.
        sqlite_times: write ``occurred_at`` as SQLite text rather than a datetime.
    """
    if isinstance(event, _SETLIST_EVENTS):
        vertical, creator, entity_id = event.vertical, None, event.performance_id
    else:
        vertical, creator, entity_id = None, event.creator, event.video_id
    occurred = event.occurred_at
    return (
        event.event_id,
        event.type,
        vertical,
        creator,
        entity_id,
        sqlite_time(occurred, body.get("occurred_at") if type(body) is dict else None)
        if sqlite_times
        else occurred.astimezone(dt.UTC),
        event.version,
        orjson.dumps(body).decode(),
        now,
        # Tracked by its batch (see PENDING). SQLite stores a bool as the integer 1
        # anyway, and Python's sqlite3 looks for an adapter for every bool it binds
        # (0.35 us a row in a one-off timing); PostgreSQL's column takes only a bool.
        1 if sqlite_times else True,
        setlist_fields(event),
    )
