"""The vertical and creator indexes hold only the rows that have one.

A performance event has no creator and a video event no vertical; each row used to add
an entry of NULL to one of the two indexes, read by no query (every query names a
vertical or a creator, which implies it is not NULL). Leaving them out takes about 1.2
us off each logged event on SQLite (one-off timing of 35,425 real rows in memory:
10.4 -> 9.1 us a row).

Revision ID: 0004_partial_scope_indexes
Revises: 0003_log_batches
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_partial_scope_indexes"
down_revision: str | Sequence[str] | None = "0003_log_batches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCOPES = (("ix_event_log_vertical", "vertical"), ("ix_event_log_creator", "creator"))


def upgrade() -> None:
    for name, column in SCOPES:
        op.drop_index(name, table_name="event_log")
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(
            name, "event_log", [column, "entity_id"], postgresql_where=where, sqlite_where=where
        )


def downgrade() -> None:
    for name, column in SCOPES:
        op.drop_index(name, table_name="event_log")
        op.create_index(name, "event_log", [column, "entity_id"])
