"""Ledger database: engine, sessions, programmatic Alembic upgrades, and its errors.

SQLite is the embedded default and gets WAL (officers read while the poller
writes), enforced foreign keys and a busy timeout; PostgreSQL is used through
psycopg 3 by URL. Migrations ship inside the package, so ``upgrade(url)`` works
from any installed copy without an ``alembic.ini``. Error messages never carry
SQL parameters (``hide_parameters``): a failed insert must not put tip text
into a log.

Only ``upgrade`` (``mailbridge db upgrade``, ``mailbridge poll``) creates a
ledger, as a 0600 file in a 0700 folder whatever the umask (SQLite gives its
``-wal`` and ``-shm`` files the same mode); ``mailbridge ledger`` and ``report``
open an existing one and say how to make it when it is missing. A database error
becomes one ``LedgerError`` line where it enters (``translated``), naming the
fix, and a URL is only ever shown with its password masked.
"""

from __future__ import annotations

import functools
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ...core.text import mask_passwords, one_line
from ...errors import LedgerError
from ...fsmodes import private_file

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT = 30.0  # seconds SQLite waits for a lock before "database is locked"
CREATE_IT = "run `mailbridge db upgrade --role station` or `mailbridge poll` first"
DB_ERRORS = (SQLAlchemyError, sqlite3.Error)
P = ParamSpec("P")
R = TypeVar("R")


def normalise_url(url: str) -> str:
    """Route plain ``postgresql://`` URLs to psycopg 3 (the driver we ship)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def display_url(url: str) -> str:
    """A database URL fit for a message or a log line: its password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return mask_passwords(url)


def ledger_error(doing: str, exc: BaseException) -> LedgerError:
    """One line for a failure the database reported: what failed, why, and the fix."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    why = mask_passwords(one_line(str(cause), max_length=300)) or type(cause).__name__
    low = why.lower()
    if "locked" in low or "busy" in low:
        kind, fix = "db_locked", ("another program holds the ledger (ledger.database) "
                                  "locked: retry in a moment, or stop what holds it")
    elif "no such table" in low or ('relation "' in low and "does not exist" in low):
        kind, fix = "db_schema", ("the ledger (ledger.database) has an old schema or none: "
                                  "run `mailbridge db upgrade --role station`")
    else:
        kind, fix = "db_failed", ("check ledger.database (server reachable, disk space, "
                                  "permissions)")
    return LedgerError(f"{doing} failed: {why}; {fix}", kind, why=why)


def translated(doing: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a ledger function: a database error inside it is raised as one
    ``LedgerError`` line (``ledger_error(doing)``), never as SQLAlchemy's own."""
    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except DB_ERRORS as exc:
                raise ledger_error(doing, exc) from exc
        return run
    return wrap


def _sqlite_pragmas(busy_timeout: float, dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Reading the mode waits for a lock like any read (busy_timeout). Switching to WAL
    # needs a moment alone with the file, and SQLite does not wait for that on its own:
    # retry the switch while another process is creating the same ledger.
    mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
    for attempt in range(50):
        if mode == "wal":
            break
        try:
            mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError:
            if attempt == 49:
                raise
            time.sleep(0.1)
    cursor.close()


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL (None for PostgreSQL or in-memory SQLite)."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def make_engine(url: str, *, immediate: bool = False, create: bool = False,
                busy_timeout: float = BUSY_TIMEOUT) -> Engine:
    """An engine for the ledger at *url* (``sqlite:///path`` or ``postgresql://...``).

    A SQLite file must exist unless *create* (``upgrade`` only): it is then made
    0600, its folder 0700. Without it the file is opened read-write but never
    created, even if it vanishes meanwhile. ``immediate`` (SQLite): every
    transaction takes the write lock when it begins, so two processes upgrading
    the schema at once run one after the other.
    """
    url = normalise_url(url)
    try:
        path = _sqlite_file(url)
        if path is not None and create:
            private_file(path)
        elif path is not None and not path.is_file():
            raise LedgerError(f"ledger.database {display_url(url)}: {path} does not exist; "
                              f"{CREATE_IT}")
        if path is None and not url.startswith("sqlite"):
            return create_engine(url, pool_pre_ping=True, hide_parameters=True)
        args: dict[str, Any] = {"timeout": busy_timeout}
        if path is not None and not create:
            url = f"sqlite:///file:{urllib.parse.quote(str(path))}?mode=rw&uri=true"
        if immediate:
            args["isolation_level"] = None  # we emit BEGIN ourselves
        engine = create_engine(url, connect_args=args, hide_parameters=True)
        event.listen(engine, "connect", functools.partial(_sqlite_pragmas, busy_timeout))
        if immediate:
            event.listen(engine, "begin", _begin_immediate)
        return engine
    except (SQLAlchemyError, ImportError, OSError, ValueError) as exc:
        raise LedgerError(f"cannot open the ledger database {display_url(url)}: "
                          f"{mask_passwords(one_line(str(exc)))}; check ledger.database in "
                          f"the config") from exc


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # Alembic loads only to migrate, not for every query

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Create the ledger at *url* if need be and bring its schema up to *revision*
    (``mailbridge db upgrade``)."""
    from alembic import command

    engine = make_engine(url, immediate=True, create=True)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except DB_ERRORS as exc:
        raise ledger_error("upgrading the ledger", exc) from exc
    finally:
        engine.dispose()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded rows usable after commit (the poller reads them back)."""
    return sessionmaker(engine, expire_on_commit=False)
