"""Configuration, read once from ``STATSWORKER_*`` environment variables."""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from events.fields import strict_date

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
"""Where state and queue live unless ``STATSWORKER_REDIS_URL`` says otherwise."""

DEFAULT_QUEUE = "statsworker"
"""RQ queue name shared by publishers and workers."""

DEFAULT_DATABASE_URL = "sqlite:///statsworker-events.db"
"""The durable event log: an SQLite file in the working directory by default."""

DEFAULT_KEY_PREFIX = "sw"
"""Prefix of every Redis key statsworker writes."""

MEMORY_SCHEME = "memory://"
"""An in-process fakeredis server instead of a real one."""

REDIS_SCHEMES = ("redis://", "rediss://", "unix://", MEMORY_SCHEME)
"""What ``STATSWORKER_REDIS_URL`` may start with (``memory://``: an in-process server)."""

DEFAULT_BATCH_SIZE = 1000
"""Events per queued job; one job is applied with one script call per vertical or creator."""


_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/]*):[^@]*@")


def redacted(url: str) -> str:
    """``url`` with its password, if any, shown as ``***``: for messages and logs."""
    return _PASSWORD.sub(r"\1:***@", url, count=1)


class Settings(BaseSettings):
    """Every setting of statsworker; environment variables use the ``STATSWORKER_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="STATSWORKER_", extra="ignore")

    redis_url: str = DEFAULT_REDIS_URL
    queue: str = Field(DEFAULT_QUEUE, min_length=1, max_length=200)
    database_url: str = DEFAULT_DATABASE_URL
    today: dt.date | None = None
    ingest_token: str | None = None
    key_prefix: str = Field(DEFAULT_KEY_PREFIX, pattern=r"^[A-Za-z0-9_.:-]{1,32}$")
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=10_000)
    log_format: Literal["text", "json"] = "text"
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(REDIS_SCHEMES):
            schemes = ", ".join(REDIS_SCHEMES)
            raise ValueError(f"must start with one of {schemes}: {redacted(value)!r}")
        if value.startswith(("redis://", "rediss://")):
            # redis-py reads what it can and ignores the rest: a database that is not a
            # number would silently be database 0.
            parts = urlsplit(value)
            # A '/', '#' or '?' in a password ends the URL's host part early: what follows
            # is read as port, database or options, and must not be shown (it holds the
            # rest of the password).
            broken = "@" in value and "@" not in parts.netloc
            hint = (
                " (a password holding '/', '#' or '?' must be percent-encoded in the URL:"
                " %2F, %23, %3F)"
            )
            if broken and not parts.hostname:  # redis://:12#ab@host reads as port 12
                raise ValueError(f"no host before the '@'{hint}")
            if broken and "@" in parts.fragment:  # redis://user:12#ab@host: host 'user'
                raise ValueError(f"an '@' after a '#'{hint}")
            try:
                parts.port  # noqa: B018 - raises on a port that is not a number
            except ValueError:
                raise ValueError(
                    f"the port must be a number from 0 to 65535{hint if broken else ''}"
                ) from None
            database = parts.path.strip("/")
            if database and not (database.isascii() and database.isdigit()):
                if broken:
                    raise ValueError(f"the database must be a number{hint}")
                raise ValueError(
                    f"the database must be a number (redis://host:6379/0), not {database!r}"
                )
        if not value.startswith(MEMORY_SCHEME):
            # Options after '?' (db, socket_timeout, ...) are read when the first client
            # is made: a bad one is reported now, by name, not as a traceback then.
            from redis.connection import parse_url

            try:
                parse_url(value)  # type: ignore[no-untyped-call]
            except ValueError as exc:
                raise ValueError(f"{str(exc).rstrip('.')}: {redacted(value)!r}") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise ValueError(
                "not a database URL (sqlite:///FILE or postgresql+psycopg://...):"
                f" {redacted(value)!r}"
            ) from None
        if url.host and "@" in url.host:  # user:p@ss@host reads as password 'p'
            raise ValueError(  # the host is not shown: it holds the password's tail
                "the host holds '@': a password holding '@' must be percent-encoded in the"
                " URL (%40)"
            )
        # The database and its driver are loaded when the log is first opened: fail now,
        # by name, rather than with a traceback from the command.
        try:
            dialect = url.get_dialect()
        except NoSuchModuleError:
            raise ValueError(
                f"SQLAlchemy knows no database {url.drivername!r}"
                " (sqlite:///FILE or postgresql+psycopg://...)"
            ) from None
        try:
            dialect.import_dbapi()
        except ImportError as exc:
            raise ValueError(
                f"the driver of {url.drivername!r} is not installed ({exc.name or exc})"
            ) from None
        return value

    @field_validator("today", mode="before")
    @classmethod
    def _today(cls, value: Any) -> Any:
        return None if value in ("", None) else strict_date(value)

    def current_date(self) -> dt.date:
        """The date windowed counters are kept for: ``today`` when pinned, else the UTC date."""
        return self.today or dt.datetime.now(dt.UTC).date()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
