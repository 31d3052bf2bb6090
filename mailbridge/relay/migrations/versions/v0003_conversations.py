"""Conversations: each tip's sealed keypair and the sealed replies and follow-ups.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_relay_tips_created", "relay_tips", ["created_hour"])
    op.create_table(
        "relay_conversations",
        sa.Column("tip_id", sa.Integer, sa.ForeignKey("relay_tips.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("category_id", sa.String(32), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary, nullable=False),
        sa.Column("salt", sa.LargeBinary, nullable=False),
        sa.Column("followups", sa.Integer, nullable=False),
    )
    op.create_table(
        "relay_messages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tip_id", sa.Integer, sa.ForeignKey("relay_tips.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("author", sa.String(8), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_relay_messages_tip", "relay_messages", ["tip_id"])


def downgrade() -> None:
    op.drop_index("ix_relay_messages_tip", table_name="relay_messages")
    op.drop_table("relay_messages")
    op.drop_table("relay_conversations")
    op.drop_index("ix_relay_tips_created", table_name="relay_tips")
