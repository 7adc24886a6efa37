"""The event log: one row per distinct accepted event.

Revision ID: 0001_event_log
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_event_log"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_log",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("vertical", sa.String(128), nullable=True),
        sa.Column("creator", sa.String(128), nullable=True),
        sa.Column("entity_id", sa.String(200), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.String(240), nullable=False),
        sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enqueued", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("event_id", name="uq_event_log_event_id"),
    )
    op.create_index("ix_event_log_vertical", "event_log", ["vertical", "entity_id"])
    op.create_index("ix_event_log_creator", "event_log", ["creator", "entity_id"])
    op.create_index(
        "ix_event_log_pending",
        "event_log",
        ["logged_at"],
        postgresql_where=sa.text("NOT enqueued"),
        sqlite_where=sa.text("NOT enqueued"),
    )


def downgrade() -> None:
    op.drop_index("ix_event_log_pending", table_name="event_log")
    op.drop_index("ix_event_log_creator", table_name="event_log")
    op.drop_index("ix_event_log_vertical", table_name="event_log")
    op.drop_table("event_log")
