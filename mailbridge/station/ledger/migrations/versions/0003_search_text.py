"""Search what people wrote: a folded ``search_text`` on messages and notes.

The full-text index covered whole subjects and bodies, so the relay's template (the
label rows, the footer) and quoted tips made every tip match "người", "biên" or its
first category, and "đ" was no "d". Messages and notes now carry ``search_text``
(``station/searchtext.py``: the writer's own words, ``search_form``), filled here for
existing rows; FTS5 (SQLite) and the GIN index (PostgreSQL) index that alone. The
PostgreSQL expression must stay identical to ``search.PG_DOCUMENT``.

Revision ID: 0003_search_text
Revises: 0002_workflow
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

from mailbridge.core.text import search_form
from mailbridge.station.searchtext import searchable

revision = "0003_search_text"
down_revision = "0002_workflow"
branch_labels = None
depends_on = None

PG_DOCUMENT = "to_tsvector('simple'::regconfig, left(coalesce(search_text, ''), 100000))"
RELAY_KINDS = ("tip", "followup")
BATCH = 1000
OLD_TRIGGERS = ("messages_fts_ai", "messages_fts_ad", "messages_fts_au")
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE messages_fts USING fts5(search_text, content='messages', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages BEGIN "
    "INSERT INTO messages_fts(rowid, search_text) VALUES (new.id, new.search_text); END",
    "CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); END",
    "CREATE TRIGGER messages_fts_au AFTER UPDATE OF search_text ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); "
    "INSERT INTO messages_fts(rowid, search_text) VALUES (new.id, new.search_text); END",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
]


def _fill(table: str, source: str, fold: Callable[[str, str], str]) -> None:
    """Set ``search_text = fold(kind, source)`` on every row of *table*, by batches."""
    bind = op.get_bind()
    rows = sa.table(table, sa.column("id", sa.Integer), sa.column("search_text", sa.Text),
                    sa.column(source, sa.Text))
    kind = sa.column("kind", sa.String) if table == "messages" else sa.literal("")
    last = 0
    while batch := bind.execute(sa.select(rows.c.id, kind, rows.c[source])
                                .select_from(rows).where(rows.c.id > last)
                                .order_by(rows.c.id).limit(BATCH)).all():
        bind.execute(rows.update().where(rows.c.id == sa.bindparam("pk"))
                     .values(search_text=sa.bindparam("value")),
                     [{"pk": pk, "value": fold(k, body or "")} for pk, k, body in batch])
        last = batch[-1][0]


def _revision(name: str) -> ModuleType:
    """Another revision file beside this one (Alembic loads them by path, not as a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _drop_index(dialect: str) -> None:
    if dialect == "sqlite":
        for trigger in OLD_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS messages_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_messages_fts")


def _create_index(dialect: str, sqlite_statements: list[str], pg_document: str) -> None:
    if dialect == "sqlite":
        for statement in sqlite_statements:
            op.execute(statement)
    elif dialect == "postgresql":
        op.execute(f"CREATE INDEX ix_messages_fts ON messages USING gin ({pg_document})")


def upgrade() -> None:
    for table in ("messages", "notes"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("search_text", sa.Text(), nullable=False,
                                       server_default=""))
    dialect = op.get_bind().dialect.name
    _drop_index(dialect)  # first: filling would update the old index row by row
    _fill("messages", "text_body", lambda kind, body: searchable(kind in RELAY_KINDS, body))
    _fill("notes", "text", lambda _kind, body: search_form(body))
    _create_index(dialect, SQLITE_FTS, PG_DOCUMENT)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    _drop_index(dialect)
    for table in ("messages", "notes"):  # SQLite ≥ 3.35 drops a column in place
        op.drop_column(table, "search_text")
    previous = _revision("0002_workflow")
    _create_index(dialect, previous.SQLITE_FTS, previous.PG_DOCUMENT)
