"""Officers' workflow: verdict, signal audit link, list indexes, full-text search.

SQLite gets an FTS5 index over message subjects and bodies (external content,
kept in step by triggers; diacritics folded so "ma tuy" finds "ma túy").
PostgreSQL gets a GIN index on the same text as a ``simple`` tsvector; the
expression must stay identical to ``search.PG_DOCUMENT`` or the index is not used.

Revision ID: 0002_workflow
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_workflow"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

PG_DOCUMENT = ("to_tsvector('simple'::regconfig, left(coalesce(subject, '') || ' ' || "
               "coalesce(text_body, ''), 100000))")
TIP_INDEXES = {
    "ix_tips_station_received": ["station_id", "received_hour"],
    "ix_tips_status_received": ["status", "received_hour"],
    "ix_tips_category_received": ["category", "received_hour"],
    "ix_tips_placement_received": ["placement", "received_hour"],
    "ix_tips_message_pk": ["message_pk"],
}
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE messages_fts USING fts5(subject, text_body, content='messages', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages BEGIN "
    "INSERT INTO messages_fts(rowid, subject, text_body) "
    "VALUES (new.id, new.subject, new.text_body); END",
    "CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, subject, text_body) "
    "VALUES ('delete', old.id, old.subject, old.text_body); END",
    "CREATE TRIGGER messages_fts_au AFTER UPDATE OF subject, text_body ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, subject, text_body) "
    "VALUES ('delete', old.id, old.subject, old.text_body); "
    "INSERT INTO messages_fts(rowid, subject, text_body) "
    "VALUES (new.id, new.subject, new.text_body); END",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    with op.batch_alter_table("tips") as batch:
        batch.add_column(sa.Column("verdict", sa.String(16), nullable=False,
                                   server_default=""))
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("event_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_audit_event_id_mail_events", "mail_events",
                                 ["event_id"], ["id"])
        batch.create_index("ix_audit_event_id", ["event_id"], unique=True)
    for name, columns in TIP_INDEXES.items():
        op.create_index(name, "tips", columns)
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in SQLITE_FTS:
            op.execute(statement)
    elif dialect == "postgresql":
        op.execute(f"CREATE INDEX ix_messages_fts ON messages USING gin ({PG_DOCUMENT})")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for trigger in ("messages_fts_ai", "messages_fts_ad", "messages_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS messages_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_messages_fts")
    for name in TIP_INDEXES:
        op.drop_index(name, table_name="tips")
    with op.batch_alter_table("audit") as batch:
        batch.drop_index("ix_audit_event_id")
        batch.drop_constraint("fk_audit_event_id_mail_events", type_="foreignkey")
        batch.drop_column("event_id")
    with op.batch_alter_table("tips") as batch:
        batch.drop_column("verdict")
