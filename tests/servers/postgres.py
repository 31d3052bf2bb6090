"""A throw-away PostgreSQL server on 127.0.0.1 with trust auth, for tests and benchmarks.

The cluster lives in ROOT/pgdata, runs as the `postgres` OS user (the server refuses
root) and is reached as the `postgres` role without a password. Needs root.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from tests.servers.mailstack import MISSING_HINT, free_ports, make_traversable, run_cmd, tail

DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
SOCKET_DIR_LIMIT = 80  # + "/.s.PGSQL.NNNNN" must stay under the 107-byte socket limit


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin holding initdb, pg_ctl and postgres."""
    candidates = []
    for bindir in Path("/usr/lib/postgresql").glob("*/bin"):
        if all((bindir / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            version = bindir.parent.name
            candidates.append((int(version) if version.isdigit() else 0, bindir))
    return max(candidates)[1] if candidates else None


class PostgresServer:
    """One PostgreSQL cluster under ROOT, listening on 127.0.0.1:PORT only.

    durable=False (the default) turns fsync, synchronous_commit and full_page_writes
    off: test databases are disposable and CREATE DATABASE gets several times faster.
    """

    host = "127.0.0.1"
    user = "postgres"

    def __init__(self, root: Path, port: int | None = None, *, durable: bool = False) -> None:
        self.root = Path(root).absolute()
        self.port = port or free_ports(1)[0]
        self.durable = durable
        self.pgdata = self.root / "pgdata"
        self.log_file = self.root / "log" / "postgres.log"
        socket_dir = self.root / "run"
        if len(str(socket_dir)) > SOCKET_DIR_LIMIT:
            digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:10]
            socket_dir = Path("/tmp") / f"pgsock-{digest}"
        self.socket_dir = socket_dir

    @staticmethod
    def install() -> None:
        """Check that a PostgreSQL server is installed (scripts/system-packages installs it)."""
        if find_bindir() is None:
            raise RuntimeError(f"PostgreSQL is not installed: {MISSING_HINT}")

    @property
    def bindir(self) -> Path:
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed; call PostgresServer.install()")
        return bindir

    def _as_postgres(self, tool: str, *args: str | os.PathLike[str]) -> None:
        run_cmd(["runuser", "-u", "postgres", "--", self.bindir / tool, *args], capture_output=True)

    def start(self) -> None:
        """initdb on first use, write the settings, and pg_ctl -w start."""
        import pwd

        pg = pwd.getpwnam("postgres")
        for path in (self.root, self.root / "log", self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
        make_traversable(self.root, ["postgres"])
        for path in (self.root / "log", self.socket_dir):
            os.chown(path, pg.pw_uid, pg.pw_gid)
            path.chmod(0o755)
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            os.chown(self.pgdata, pg.pw_uid, pg.pw_gid)
            self._as_postgres("initdb", "-D", self.pgdata, "--auth=trust", "--username=postgres",
                              "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
            with open(self.pgdata / "postgresql.conf", "a") as conf:
                conf.write("include = 'test-server.conf'\n")
        (self.pgdata / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        )
        fast = "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        (self.pgdata / "test-server.conf").write_text(
            f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
            f"unix_socket_directories = '{self.socket_dir}'\n{'' if self.durable else fast}"
        )
        for name in ("pg_hba.conf", "test-server.conf"):
            os.chown(self.pgdata / name, pg.pw_uid, pg.pw_gid)
        try:
            self._as_postgres("pg_ctl", "-D", self.pgdata, "-l", self.log_file, "-w", "-t", "60",
                              "start")
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(
                f"PostgreSQL failed to start: {exc}\n{exc.stdout}{exc.stderr}\n"
                f"{tail(self.log_file)}"
            ) from exc

    def stop(self) -> None:
        """pg_ctl -m fast stop, if the server runs; removes a short socket dir."""
        if (self.pgdata / "postmaster.pid").exists():
            self._as_postgres("pg_ctl", "-D", self.pgdata, "-m", "fast", "-w", "-t", "60", "stop")
        if self.socket_dir.parent == Path("/tmp"):
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) for DATABASE."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(host=self.host, port=self.port, user=self.user,
                               dbname="postgres", autocommit=True, connect_timeout=10)

    def create_database(self, name: str) -> str:
        """CREATE DATABASE NAME (lower-case identifier) and return its SQLAlchemy URL."""
        if not DB_NAME.fullmatch(name):
            raise ValueError(f"not a plain lower-case database name: {name!r}")
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE ... WITH (FORCE): disconnects leftover sessions (engine pools)."""
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))

