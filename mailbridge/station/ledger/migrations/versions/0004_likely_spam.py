"""A tip's likely-spam mark: the relay's signed ``X-Mailbridge-Likely-Spam`` value
(``near-duplicate``: many copies of one text), "" for every other tip.

Revision ID: 0004_likely_spam
Revises: 0003_search_text
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_likely_spam"
down_revision = "0003_search_text"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tips", sa.Column("likely_spam", sa.String(32), nullable=False,
                                    server_default=""))


def downgrade() -> None:
    # In place (SQLite >= 3.35): a batch copy would drop "tips", which others reference.
    op.drop_column("tips", "likely_spam")
