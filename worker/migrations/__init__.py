"""Alembic migrations of the event log, and the helpers that run and check them.

``statsworker migrate`` runs :func:`upgrade`; :func:`ensure_schema` is what opening a
log calls. The version table is ``statsworker_alembic_version`` so that the log can
share a database with an application that has its own Alembic history.
"""

from __future__ import annotations

import logging
import time
from functools import cache
from typing import Any

if logging.getLogger("alembic").level == logging.NOTSET:
    # Alembic logs its plugins when imported and its dialect whenever a revision is
    # read: lines at every process start that say nothing to a user of statsworker.
    logging.getLogger("alembic").setLevel(logging.WARNING)

# Imported once their logging is quiet (see above).
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)


VERSION_TABLE = "statsworker_alembic_version"
"""Where Alembic records the log's schema revision."""

SCRIPT_LOCATION = "worker:migrations"
"""The migrations ship inside the package, so an installed wheel can migrate."""


MIGRATION_WAIT_SECONDS = 30.0
"""How long opening a log waits for another process's migration of it to finish."""


class SchemaNotReady(RuntimeError):
    """The log's database schema is not at the latest migration."""


def alembic_config(engine: Engine | None = None, url: str | None = None) -> Config:
    """An Alembic configuration for this package's migrations.

    Args:
        engine: migrate through this engine (``env.py`` reads it from the attributes).
        url: else the database URL (else ``STATSWORKER_DATABASE_URL``).
    """
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


@cache
def head_revision() -> str:
    """The latest revision shipped with the package."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "worker/migrations/versions holds no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None before the first migration)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database forward (or back) to ``revision``."""
    cfg = alembic_config(engine)
    current = current_revision(engine)
    if revision != "head" and current is not None and _is_ahead(current, revision):
        command.downgrade(cfg, revision)
    else:
        command.upgrade(cfg, revision)


def _is_ahead(current: str, target: str) -> bool:
    script = ScriptDirectory.from_config(alembic_config())
    if target == "base":
        return True
    return any(rev.revision == target for rev in script.iterate_revisions(current, "base"))


def ensure_schema(engine: Engine, upgrade: bool) -> None:
    """Make sure the schema is at the head revision, migrating it when ``upgrade``.

    Raises:
        SchemaNotReady: the schema is behind and ``upgrade`` is false.
    """
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return
    if not upgrade:
        raise SchemaNotReady(
            f"the event log at {engine.url.render_as_string(hide_password=True)} is at "
            f"revision {current or 'none'}, not {head}: run `statsworker migrate`"
        )
    log.info("migrating the event log from %s to %s", current or "empty", head)
    try:
        command.upgrade(alembic_config(engine), "head")
    except (OperationalError, CommandError):
        # Another process opening the same SQLite file is migrating it too (a worker
        # and a publisher started together): its migration finishes ours. SQLite runs
        # each DDL statement on its own, so ours either trips over its work (a table or
        # index already there, or gone) or gets through and finds the version row
        # already moved on (alembic's CommandError).
        deadline = time.monotonic() + MIGRATION_WAIT_SECONDS
        while current_revision(engine) != head:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def describe(engine: Engine) -> dict[str, Any]:
    """Current and head revision, for ``statsworker migrate --check``."""
    return {"current": current_revision(engine), "head": head_revision()}
