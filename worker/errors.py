"""What to tell the user of a server that cannot be used: one line instead of a
traceback. The command line ends with it (exit code 3); a worker's sweep of the event
log logs it."""

from __future__ import annotations

import redis
import sqlalchemy
import sqlalchemy.exc

from stats.settings import redacted

UNREACHABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ResponseError,
    redis.exceptions.InvalidResponse,  # not a Redis server at that address
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DatabaseError,  # as such: SQLite's "file is not a database"
)
"""Errors of a server the command could not reach (or that refused it), which end a
command with one line and exit code 3 instead of a traceback (``-v`` shows it)."""


def unreachable(exc: BaseException, redis_url: str, database_url: str) -> str | None:
    """What to tell the user of ``exc``, one of :data:`UNREACHABLE`; None for a reply
    of Redis that is not about reaching it (a bug, shown with its traceback)."""
    redis_at = f"Redis at {redacted(redis_url)}"
    if isinstance(exc, redis.ResponseError):
        if str(exc).startswith("DB index"):
            return f"{redis_at} refused the database: {exc}"
        if isinstance(exc, redis.exceptions.OutOfMemoryError | redis.exceptions.ReadOnlyError):
            return f"{redis_at} refuses writes: {exc}"
        if str(exc).startswith("MISCONF"):  # it cannot save its snapshot
            return f"{redis_at} refuses writes: {exc}"
        if isinstance(exc, redis.exceptions.NoPermissionError):
            return f"{redis_at} refused a command to this user: {exc}"
        return None
    if isinstance(exc, redis.exceptions.InvalidResponse):
        return f"the server at {redacted(redis_url)} does not answer as Redis does: {exc}"
    if isinstance(exc, redis.RedisError):
        return f"cannot reach {redis_at}: {exc}"
    from worker.eventlog import log_unusable
    from worker.migrations import SchemaNotReady

    if isinstance(exc, SchemaNotReady):
        return str(exc)  # it names the log and says what to run
    detail = getattr(exc, "orig", None) or exc
    text = str(detail).strip().splitlines()[0] if str(detail).strip() else type(detail).__name__
    try:
        where = sqlalchemy.engine.make_url(database_url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        where = "its URL"
    if getattr(detail, "sqlstate", None) == PERMISSION_DENIED:
        return f"the event log at {where} refused this user: {text}"
    if not log_unusable(exc):
        return None  # IntegrityError, ProgrammingError...: not about opening the log
    return f"cannot open the event log at {where}: {text}"


PERMISSION_DENIED = "42501"
"""PostgreSQL's SQLSTATE insufficient_privilege (no CREATE on the schema, say)."""
