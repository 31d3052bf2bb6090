"""Form tips per station and UTC hour, counted in the database so every web worker
(and every relay sharing a PostgreSQL outbox) shares one exact limit.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relay_station_counts",
        sa.Column("hour", sa.DateTime, primary_key=True),
        sa.Column("station_id", sa.String(32), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("relay_station_counts")
