"""A performance's setlist fields beside its body, so a rebuild decodes no JSON.

Revision ID: 0002_setlist_fields
Revises: 0001_event_log
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_setlist_fields"
down_revision: str | Sequence[str] | None = "0001_event_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILL = {
    "sqlite": (
        "json_extract(body, '$.song') || char(31) || json_extract(body, '$.show_id')"
        " || char(31) || json_extract(body, '$.show_date') || char(31)"
        " || coalesce(json_extract(body, '$.song_title'), '')"
    ),
    "postgresql": (
        "(body ->> 'song') || chr(31) || (body ->> 'show_id') || chr(31)"
        " || (body ->> 'show_date') || chr(31) || coalesce(body ->> 'song_title', '')"
    ),
}
"""The value of ``fields`` computed from the body, for the rows logged before it existed."""


def upgrade() -> None:
    op.add_column("event_log", sa.Column("fields", sa.Text(), nullable=True))
    fill = FILL[op.get_bind().dialect.name]
    op.execute(f"UPDATE event_log SET fields = {fill} WHERE type = 'performance.recorded'")


def downgrade() -> None:
    with op.batch_alter_table("event_log") as batch:
        batch.drop_column("fields")
