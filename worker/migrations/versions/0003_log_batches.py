"""Batches in flight: a queued batch is marked by deleting one row, not by updating each
of its events.

Revision ID: 0003_log_batches
Revises: 0002_setlist_fields
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_log_batches"
down_revision: str | Sequence[str] | None = "0002_setlist_fields"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "log_batches",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    # Rows logged before this revision keep `enqueued` as it was: the sweep still finds
    # those never queued by it.
    op.add_column("event_log", sa.Column("batch", sa.BigInteger(), nullable=True))
    op.create_index("ix_event_log_batch", "event_log", ["batch"])


def downgrade() -> None:
    # Rows of batches still in flight become rows not known to be queued, as before.
    op.execute("UPDATE event_log SET enqueued = FALSE WHERE batch IN (SELECT id FROM log_batches)")
    op.drop_index("ix_event_log_batch", table_name="event_log")
    with op.batch_alter_table("event_log") as batch:
        batch.drop_column("batch")
    op.drop_table("log_batches")
