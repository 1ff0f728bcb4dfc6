"""Usage records, replica events and API keys.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("gateway", sa.String(64)),
        sa.Column("key_id", sa.String(32)),
        sa.Column("endpoint", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("pool", sa.String(100)),
        sa.Column("replica", sa.String(100)),
        sa.Column("tier", sa.String(50)),
        sa.Column("routing_reason", sa.String(200)),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("prompt_text_tokens", sa.Integer),
        sa.Column("prompt_image_tokens", sa.Integer),
        sa.Column("prompt_video_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("tokens_saved", sa.Integer),
        sa.Column("image_tokens_saved", sa.Integer),
        sa.Column("duration_s", sa.Float),
        sa.Column("ttft_s", sa.Float),
        sa.Column("cold_start_wait_s", sa.Float),
        sa.Column("cost_usd", sa.Float),
        sa.Column("anomaly", sa.Boolean, nullable=False),
        sa.Column("extra", sa.JSON),
    )
    op.create_index("ix_usage_time", "usage_records", ["time"])
    op.create_index("ix_usage_key_time", "usage_records", ["key_id", "time"])
    op.create_index("ix_usage_pool_time", "usage_records", ["pool", "time"])
    op.create_index("ix_usage_model_time", "usage_records", ["model", "time"])
    op.create_table(
        "replica_events",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("pool", sa.String(100), nullable=False),
        sa.Column("replica", sa.String(100), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=False),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("duration_s", sa.Float),
    )
    op.create_index("ix_events_pool_time", "replica_events", ["pool", "time"])
    op.create_index("ix_events_time", "replica_events", ["time"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
        sa.Column("budget_usd_per_day", sa.Float),
        sa.Column("budget_usd_per_month", sa.Float),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        sa.Column("models", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("replica_events")
    op.drop_table("usage_records")
