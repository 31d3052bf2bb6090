"""The SMS rate limit across intake processes: this hour's random key and its buckets.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relay_sms_keys",
        sa.Column("hour", sa.DateTime, primary_key=True),
        sa.Column("key", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "relay_sms_counts",
        sa.Column("hour", sa.DateTime, primary_key=True),
        sa.Column("bucket", sa.String(16), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("relay_sms_counts")
    op.drop_table("relay_sms_keys")
