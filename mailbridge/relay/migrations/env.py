"""Alembic environment for the relay database.

``RelayStore.upgrade()`` passes an open connection in ``config.attributes``,
so users need no alembic.ini and the upgrade runs inside the store's own
transaction (with its SQLite pragmas and PostgreSQL advisory lock).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from mailbridge.relay.store import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run relay migrations through RelayStore.upgrade(), which passes "
                       "a connection; there is no alembic.ini for offline use")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
)
with context.begin_transaction():
    context.run_migrations()
