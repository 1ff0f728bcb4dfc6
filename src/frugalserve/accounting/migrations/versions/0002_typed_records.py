"""Usage records carry every RequestRecord field in its own column; the free-form extra column goes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ADDED = (
    sa.Column("counted_prompt_tokens", sa.Integer),
    sa.Column("images_resized", sa.Integer),
    sa.Column("duplicates_dropped", sa.Integer),
    sa.Column("max_tokens_requested", sa.Integer),
    sa.Column("max_tokens", sa.Integer),
    sa.Column("notes", sa.String(1000)),
    sa.Column("usage_note", sa.String(200)),
    sa.Column("client_disconnected", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("concurrency", sa.Integer),
)


def upgrade() -> None:
    # batch mode: SQLite rebuilds the table, PostgreSQL alters it in place
    with op.batch_alter_table("usage_records") as batch:
        for column in _ADDED:
            batch.add_column(column)
        batch.drop_column("tokens_saved")
        batch.drop_column("extra")


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("extra", sa.JSON))
        batch.add_column(sa.Column("tokens_saved", sa.Integer))
        for column in reversed(_ADDED):
            batch.drop_column(column.name)
