"""The autoscaler's decisions (scale up, down, refused, prewarm used or expired) with their reasons.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "scale_events",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("pool", sa.String(100), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_replicas", sa.Integer, nullable=False),
        sa.Column("to_replicas", sa.Integer, nullable=False),
        sa.Column("signal", sa.String(32), nullable=False),
        sa.Column("load", sa.Float, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
    )
    op.create_index("ix_scale_pool_time", "scale_events", ["pool", "time"])
    op.create_index("ix_scale_time", "scale_events", ["time"])


def downgrade() -> None:
    op.drop_index("ix_scale_time", table_name="scale_events")
    op.drop_index("ix_scale_pool_time", table_name="scale_events")
    op.drop_table("scale_events")
