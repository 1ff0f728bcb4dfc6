"""Usage records by request id: GET /v1/requests/{id} finds one without reading the whole table.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_usage_request_id", "usage_records", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_usage_request_id", table_name="usage_records")
