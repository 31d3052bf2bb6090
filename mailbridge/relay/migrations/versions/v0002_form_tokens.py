"""Used form tokens, kept in the database so a restart cannot make them valid again.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relay_form_tokens",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("expires_hour", sa.DateTime, nullable=False),
    )
    op.create_index("ix_relay_form_tokens_expires", "relay_form_tokens", ["expires_hour"])


def downgrade() -> None:
    op.drop_index("ix_relay_form_tokens_expires", table_name="relay_form_tokens")
    op.drop_table("relay_form_tokens")
