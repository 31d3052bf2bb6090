"""Alembic environment for the ledger, driven by ``db.upgrade`` (no alembic.ini)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from mailbridge.station.ledger.db import make_engine
from mailbridge.station.ledger.models import Base


def _run(connection: Connection) -> None:
    # Batch mode lets later revisions ALTER tables on SQLite too.
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "", create=True)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


run()
