"""Ledger database: engine, sessions and programmatic Alembic upgrades.

SQLite is the embedded default and gets WAL (officers read while the poller
writes), enforced foreign keys and a busy timeout; PostgreSQL is used through
psycopg 3 by URL. Migrations ship inside the package, so ``upgrade(url)`` works
from any installed copy without an ``alembic.ini``. Error messages never carry
SQL parameters (``hide_parameters``): a failed insert must not put tip text
into a log.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ...errors import LedgerError

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str) -> str:
    """Route plain ``postgresql://`` URLs to psycopg 3 (the driver we ship)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Switching to WAL needs a moment alone with the file, and SQLite does not wait
    # for it on its own: retry while another process is creating the same ledger.
    for attempt in range(50):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                break
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if attempt == 49:
                raise
            time.sleep(0.1)
    cursor.close()


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, immediate: bool = False) -> Engine:
    """An engine for the ledger at *url* (``sqlite:///path`` or ``postgresql://...``).

    ``immediate`` (SQLite): every transaction takes the write lock when it begins,
    so two processes upgrading the schema at once run one after the other.
    """
    url = normalise_url(url)
    try:
        if url.startswith("sqlite"):
            path = url.partition(":///")[2]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            args: dict[str, Any] = {"timeout": BUSY_TIMEOUT_MS / 1000}
            if immediate:
                args["isolation_level"] = None  # we emit BEGIN ourselves
            engine = create_engine(url, connect_args=args, hide_parameters=True)
            event.listen(engine, "connect", _sqlite_pragmas)
            if immediate:
                event.listen(engine, "begin", _begin_immediate)
            return engine
        return create_engine(url, pool_pre_ping=True, hide_parameters=True)
    except (SQLAlchemyError, ImportError, OSError) as exc:
        raise LedgerError(f"cannot open the ledger database {url!r}: {exc}; check "
                          f"ledger.database in the config") from exc


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the ledger schema at *url* up to *revision* (``mailbridge db upgrade``)."""
    engine = make_engine(url, immediate=True)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except SQLAlchemyError as exc:
        raise LedgerError(f"upgrading the ledger database failed: {exc}; check that "
                          f"ledger.database is reachable and writable") from exc
    finally:
        engine.dispose()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded rows usable after commit (the poller reads them back)."""
    return sessionmaker(engine, expire_on_commit=False)
