"""``mailbridge backup --to DIR`` and ``mailbridge restore --from DIR``, by role.

SQLite is copied with its online backup API: a consistent snapshot while the relay
or the poller keeps writing, each committed transaction (a ledger chunk with its
cursor, an accepted tip with its ref) in it whole or not at all. PostgreSQL is
dumped with ``pg_dump`` (custom format) and restored with ``pg_restore --clean``,
the relay's ``relay_*`` tables and the ledger's others apart, since both may share a
database. The ledger's attachment files are copied as well. Every file is 0600 in a
0700 folder. The installation secret is never in a backup: it lives in the service's
environment file, and the backup says so.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from .config import Settings
from .errors import LedgerError, RuntimeFailure, StoreError
from .fsmodes import open_private, private_dir

Out = Callable[[str], None]


@dataclass(frozen=True)
class _Database:
    """One role's database: the file names in the backup, its URL, its error type."""

    name: str  # relay | ledger
    url: str
    error: type[RuntimeFailure]
    tables: tuple[str, ...]  # pg_dump: --table patterns, or --exclude-table with "!"

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def path(self) -> Path:
        database = make_url(self.url).database
        if not database or database == ":memory:":
            raise self.error(f"{self.name} database {self.url!r} is in memory: nothing to "
                             f"back up or restore")
        return Path(database)

    def file_in(self, folder: Path) -> Path:
        return folder / (f"{self.name}.db" if self.is_sqlite else f"{self.name}.pgdump")


def _databases(settings: Settings) -> list[_Database]:
    found = []
    if settings.role in ("relay", "all"):
        found.append(_Database("relay", settings.relay.database, StoreError, ("relay_*",)))
    if settings.role in ("station", "all"):
        found.append(_Database("ledger", settings.ledger.database, LedgerError, ("!relay_*",)))
    return found


def run_backup(settings: Settings, to: Path, *, out: Out = print) -> int:
    private_dir(to)
    for db in _databases(settings):
        target = db.file_in(to)
        if db.is_sqlite:
            _sqlite_copy(db, db.path, target)
            out(f"backup: {db.path} -> {target} (SQLite online backup)")
        else:
            _pg(db, "pg_dump", "--format=custom", "--no-owner", f"--file={target}",
                *(f"--exclude-table={t[1:]}" if t.startswith("!") else f"--table={t}"
                  for t in db.tables), prepare=target)
            out(f"backup: {db.name} tables -> {target} (pg_dump)")
        if db.name == "ledger":
            count = _copy_tree(settings.ledger.attachments_dir, to / "attachments")
            out(f"backup: {count} attachment file(s) -> {to / 'attachments'}")
    if settings.role in ("relay", "all"):
        out("backup: the relay's secret is NOT in it: keep the variable relay.secret_env "
            "names (its .env or EnvironmentFile) apart; without it no receipt code opens "
            "a conversation and the stations' relay_public_keys no longer match")
    return 0


def run_restore(settings: Settings, source: Path, *, out: Out = print) -> int:
    for db in _databases(settings):
        backup = db.file_in(source)
        if not backup.is_file():
            raise db.error(f"{backup} is missing: restore from a folder `mailbridge backup "
                           f"--to` wrote for this role and database type")
    for db in _databases(settings):
        backup = db.file_in(source)
        if db.is_sqlite:
            _sqlite_copy(db, backup, db.path)
        else:
            _pg(db, "pg_restore", "--clean", "--if-exists", "--no-owner",
                "--single-transaction", str(backup), dbname=True)
        out(f"restore: {backup} -> the {db.name} database")
        if db.name == "ledger" and (source / "attachments").is_dir():
            count = _copy_tree(source / "attachments", settings.ledger.attachments_dir)
            out(f"restore: {count} attachment file(s) -> {settings.ledger.attachments_dir}")
        if db.name == "relay":
            out("restore: tips the relay accepted after this backup was made are not in it, "
                "and their numbers will be given again: check the station's newest refs")
    return 0


def _sqlite_copy(db: _Database, source: Path, target: Path) -> None:
    """``source`` into ``target`` page by page under SQLite's locks: a live database is
    read as one snapshot, and a live target is replaced in one step."""
    if not source.is_file():
        raise db.error(f"{db.name} database {source} does not exist: check the config's "
                       f"database URL")
    try:
        os.close(open_private(target, os.O_RDONLY))  # 0600 before SQLite writes into it
        with closing(sqlite3.connect(f"file:{source}?mode=rw", uri=True)) as src, \
                closing(sqlite3.connect(target)) as dst:
            src.backup(dst)
    except (sqlite3.Error, OSError) as exc:
        raise db.error(f"copying {source} to {target} failed ({exc}): check the folder's "
                       f"space and permissions, and that no other program locks it") from exc


def _pg(db: _Database, program: str, *args: str, prepare: Path | None = None,
        dbname: bool = False) -> None:
    """Run pg_dump or pg_restore on the role's database; the password only in the
    child's environment, never on its command line."""
    if shutil.which(program) is None:
        raise db.error(f"{program} is not installed: apt-get install postgresql-client")
    url = make_url(db.url)
    env = {**os.environ, "PGHOST": url.host or "", "PGPORT": str(url.port or 5432),
           "PGUSER": url.username or "", "PGDATABASE": url.database or ""}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    if prepare is not None:
        os.close(open_private(prepare, os.O_WRONLY | os.O_TRUNC))
    command = [program, *args, *([f"--dbname={url.database}"] if dbname else [])]
    proc = subprocess.run(command, env=env, capture_output=True, text=True,  # noqa: S603
                          check=False)  # our fixed arguments; the URL only in the environment
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise db.error(f"{program} failed for the {db.name} database ({why}): check that "
                       f"the server is reachable and the client is as new as the server")


def _copy_tree(source: Path, target: Path) -> int:
    """Copy every file under *source* to *target*, 0600 in 0700 folders; returns how many."""
    count = 0
    for path in sorted(source.rglob("*")) if source.is_dir() else []:
        if not path.is_file() or path.name.startswith(".tmp-"):
            continue
        dest = target / path.relative_to(source)
        private_dir(dest.parent)
        with open(path, "rb") as src, os.fdopen(
                open_private(dest, os.O_WRONLY | os.O_TRUNC), "wb") as dst:
            shutil.copyfileobj(src, dst)
        count += 1
    return count
