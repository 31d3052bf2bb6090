"""After a retention pass: make deleted rows leave the database's files too.

Used by both roles (``mailbridge purge``). SQLite keeps a deleted row's bytes in
free pages and in old WAL frames; ``secure_delete`` zeroes the pages as rows are
deleted, VACUUM rewrites the file without its free pages, and a TRUNCATE checkpoint
folds the WAL back into the file and cuts it to nothing. PostgreSQL keeps old row
versions until VACUUM marks them reusable: their bytes may stay in free space and in
the server's WAL segments until overwritten, which only full-disk encryption hides.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Engine


def secure_delete(conn: Connection) -> None:
    """SQLite: zero what this connection deletes from now on (a no-op elsewhere)."""
    if conn.dialect.name == "sqlite":
        conn.connection.driver_connection.execute("PRAGMA secure_delete=ON")  # type: ignore[union-attr]


def compact(engine: Engine, tables: Iterable[str]) -> bool:
    """VACUUM the database (SQLite: the whole file, then fold and truncate the WAL;
    PostgreSQL: *tables*), outside any transaction as VACUUM requires. False when a
    reader elsewhere kept the WAL from being truncated: run it again when idle."""
    if engine.dialect.name != "sqlite":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in tables:
                conn.exec_driver_sql(f'VACUUM "{table}"')
        return True
    with engine.connect() as conn:
        raw: Any = conn.connection.driver_connection
        raw.execute("PRAGMA secure_delete=ON")
        raw.execute("VACUUM")
        busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy
