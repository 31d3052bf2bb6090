"""Initial ledger schema: indexing tables and the officers' workflow tables.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # tips.message_pk and messages.tip_id point at each other: SQLite accepts the
    # forward reference inline; elsewhere the constraint is added after both exist.
    tip_fk = [sa.ForeignKeyConstraint(["message_pk"], ["messages.id"],
                                      name="fk_tips_message_pk")] if sqlite else []
    op.create_table(
        "tips",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("station_id", sa.String(32), nullable=False),
        sa.Column("ref", sa.String(32), nullable=False),
        sa.Column("message_pk", sa.Integer(), nullable=True),
        sa.Column("received_category", sa.String(32), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("placement", sa.String(32), nullable=False),
        sa.Column("received_hour", sa.DateTime(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("preview", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=False),
        sa.Column("assignee", sa.String(120), nullable=False),
        sa.Column("first_action_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("station_id", "ref"),
        *tip_fk,
    )
    op.create_index("ix_tips_station_status", "tips", ["station_id", "status"])
    op.create_index("ix_tips_category", "tips", ["category"])
    op.create_index("ix_tips_placement", "tips", ["placement"])
    op.create_index("ix_tips_received_hour", "tips", ["received_hour"])

    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("station_id", sa.String(32), nullable=False),
        sa.Column("message_id", sa.String(512), nullable=False),
        sa.Column("raw_sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text_body", sa.Text(), nullable=False),
        sa.Column("sender", sa.String(320), nullable=False),
        sa.Column("received_hour", sa.DateTime(), nullable=True),
        sa.Column("in_reply_to", sa.String(512), nullable=False),
        sa.Column("references", sa.Text(), nullable=False),
        sa.Column("ref", sa.String(32), nullable=False),
        sa.Column("warning", sa.Text(), nullable=False),
        sa.Column("tip_id", sa.Integer(), sa.ForeignKey("tips.id"), nullable=True),
        sa.Column("indexed_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("station_id", "message_id"),
    )
    for column in ("station_id", "raw_sha256", "kind", "received_hour", "tip_id"):
        op.create_index(f"ix_messages_{column}", "messages", [column])
    op.create_index("ix_messages_station_ref", "messages", ["station_id", "ref"])
    if not sqlite:
        op.create_foreign_key("fk_tips_message_pk", "tips", "messages",
                              ["message_pk"], ["id"])

    op.create_table(
        "message_refs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("message_pk", sa.Integer(), sa.ForeignKey("messages.id"), nullable=False),
        sa.Column("target", sa.String(512), nullable=False),
        sa.UniqueConstraint("message_pk", "target"),
    )
    op.create_index("ix_message_refs_target", "message_refs", ["target"])

    op.create_table(
        "attachments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("message_pk", sa.Integer(), sa.ForeignKey("messages.id"), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(127), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("stored_path", sa.Text(), nullable=False),
    )
    op.create_index("ix_attachments_message_pk", "attachments", ["message_pk"])

    op.create_table(
        "locations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("message_pk", sa.Integer(), sa.ForeignKey("messages.id"), nullable=False),
        sa.Column("station_id", sa.String(32), nullable=False),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("flags", sa.Text(), nullable=False),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.Column("gone", sa.Boolean(), nullable=False),
        sa.Column("gone_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("station_id", "folder", "uidvalidity", "uid"),
    )
    op.create_index("ix_locations_message_pk", "locations", ["message_pk"])
    op.create_index("ix_locations_gone", "locations", ["gone"])
    op.create_index("ix_locations_live", "locations", ["station_id", "folder", "gone"])

    op.create_table(
        "folder_state",
        sa.Column("station_id", sa.String(32), primary_key=True),
        sa.Column("folder", sa.String(255), primary_key=True),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("highestmodseq", sa.BigInteger(), nullable=False),
        sa.Column("uidnext", sa.BigInteger(), nullable=False),
        sa.Column("message_count", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )

    op.create_table(
        "mail_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("station_id", sa.String(32), nullable=False),
        sa.Column("message_pk", sa.Integer(), sa.ForeignKey("messages.id"), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_mail_events_station_id", "mail_events", ["station_id"])
    op.create_index("ix_mail_events_message_pk", "mail_events", ["message_pk"])

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("station_id", sa.String(32), nullable=False),
        sa.Column("message_pk", sa.Integer(), sa.ForeignKey("messages.id"), nullable=True),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("station_id", "folder", "uidvalidity", "uid"),
    )
    op.create_index("ix_quarantine_message_pk", "quarantine", ["message_pk"])

    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tip_id", sa.Integer(), sa.ForeignKey("tips.id"), nullable=False),
        sa.Column("author", sa.String(120), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_notes_tip_id", "notes", ["tip_id"])

    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tip_id", sa.Integer(), sa.ForeignKey("tips.id"), nullable=False),
        sa.Column("station_id", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(120), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("old", sa.Text(), nullable=False),
        sa.Column("new", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_audit_tip_id", "audit", ["tip_id"])


def downgrade() -> None:
    for table in ("audit", "notes", "quarantine", "mail_events", "folder_state",
                  "locations", "attachments", "message_refs"):
        op.drop_table(table)
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_tips_message_pk", "tips", type_="foreignkey")
    op.drop_table("messages")
    op.drop_table("tips")
