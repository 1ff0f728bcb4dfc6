"""API keys may set a default model and the tiers model "auto" may route them to; a usage record keeps the
whole route line (x-frugalserve-route), which can be longer than 200 characters.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("default_model", sa.String(200)))
        batch.add_column(sa.Column("tiers", sa.Text))
    with op.batch_alter_table("usage_records") as batch:
        batch.alter_column("routing_reason", type_=sa.Text, existing_type=sa.String(200))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.alter_column("routing_reason", type_=sa.String(200), existing_type=sa.Text)
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("tiers")
        batch.drop_column("default_model")
