"""Worker facts: a few numbers each worker publishes about itself (seconds to load and compile each model).

Shaped ``{"fact_name": {"model-id": number}}``; NULL until the worker first publishes some. The API shows them on
/metrics, read from the store, so they cover workers on every machine.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workers", sa.Column("facts", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("facts")
