"""The index of the fair claim: queued rows only, by organisation, in claim order.

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
    queued = sa.text("status = 'queued'")
    op.create_index(
        "ix_requests_queued",
        "requests",
        ["org_id", sa.text("priority DESC"), "seq"],
        postgresql_where=queued,
        sqlite_where=queued,
    )


def downgrade() -> None:
    op.drop_index("ix_requests_queued", table_name="requests")
