"""Alembic environment: migrates the event log through the engine it is given.

``worker.migrations.alembic_config`` passes the engine in ``config.attributes``; the
``alembic`` command line (``alembic -c worker/migrations/alembic.ini``) uses
``sqlalchemy.url`` or, when that is empty, ``STATSWORKER_DATABASE_URL``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from worker.eventlog import make_engine
from worker.log_table import metadata
from worker.migrations import VERSION_TABLE

MIGRATION_LOCK = 0x5357_4C4F_4721
"""PostgreSQL advisory lock id held while migrating, so two ``migrate`` runs queue up."""

config = context.config


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from stats.settings import get_settings

    return get_settings().database_url


def _migrate(conn: Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=conn.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK})
        context.run_migrations()


def run_offline() -> None:
    """Print the SQL instead of running it (``alembic upgrade head --sql``)."""
    context.configure(
        url=_url(),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate through the given engine, or one made from the URL."""
    given: Engine | None = config.attributes.get("engine")
    owned = given is None
    engine = make_engine(_url()) if given is None else given
    try:
        with engine.connect() as conn:
            _migrate(conn)
            conn.commit()
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
