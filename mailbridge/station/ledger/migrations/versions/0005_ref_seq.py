"""A tip's running number (``NCS-0042`` -> 42), so the list orders one hour's tips as
they were accepted rather than as they were indexed.

Revision ID: 0005_ref_seq
Revises: 0004_likely_spam
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailbridge.core.receipts import ref_number

revision = "0005_ref_seq"
down_revision = "0004_likely_spam"
branch_labels = None
depends_on = None

BATCH = 5000


def upgrade() -> None:
    op.add_column("tips", sa.Column("ref_seq", sa.Integer(), nullable=False,
                                    server_default="0"))
    tips = sa.table("tips", sa.column("id", sa.Integer), sa.column("ref", sa.String),
                    sa.column("ref_seq", sa.Integer))
    bind = op.get_bind()
    last = 0
    while rows := bind.execute(sa.select(tips.c.id, tips.c.ref).where(tips.c.id > last)
                               .order_by(tips.c.id).limit(BATCH)).all():
        bind.execute(tips.update().where(tips.c.id == sa.bindparam("pk"))
                     .values(ref_seq=sa.bindparam("seq")),
                     [{"pk": pk, "seq": ref_number(ref)} for pk, ref in rows])
        last = rows[-1][0]


def downgrade() -> None:
    # In place (SQLite >= 3.35): a batch copy would drop "tips", which others reference.
    op.drop_column("tips", "ref_seq")
