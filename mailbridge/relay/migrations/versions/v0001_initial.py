"""Initial relay schema: outbox, tip records, per-station counters.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relay_counters",
        sa.Column("station_id", sa.String(32), primary_key=True),
        sa.Column("last_number", sa.Integer, nullable=False),
    )
    op.create_table(
        "relay_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("station_id", sa.String(32), nullable=False),
        sa.Column("ref", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=True),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("message", sa.LargeBinary, nullable=True),
        sa.Column("created_hour", sa.DateTime, nullable=False),
        sa.Column("updated_hour", sa.DateTime, nullable=False),
        sa.Column("delivered_hour", sa.DateTime, nullable=True),
        sa.Column("window_hour", sa.DateTime, nullable=False),
        sa.UniqueConstraint("station_id", "ref", name="uq_relay_outbox_ref"),
    )
    op.create_index("ix_relay_outbox_due", "relay_outbox", ["state", "next_attempt_at"])
    op.create_table(
        "relay_tips",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("station_id", sa.String(32), nullable=False),
        sa.Column("ref", sa.String(32), nullable=False),
        sa.Column("reply_token", sa.String(64), nullable=False, unique=True),
        sa.Column("receipt_hash", sa.String(128), nullable=False, unique=True),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("created_hour", sa.DateTime, nullable=False),
        sa.UniqueConstraint("station_id", "ref", name="uq_relay_tips_ref"),
    )


def downgrade() -> None:
    op.drop_table("relay_tips")
    op.drop_index("ix_relay_outbox_due", table_name="relay_outbox")
    op.drop_table("relay_outbox")
    op.drop_table("relay_counters")
