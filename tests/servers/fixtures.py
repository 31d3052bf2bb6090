"""pytest fixtures for the real servers; load with pytest_plugins = ["tests.servers.fixtures"].

Server binaries come from scripts/system-packages (which `make test` runs); they are
never skipped: a green run must mean the real thing ran. A missing or broken server
ends the run with one line saying what to do.

The server directories live in /tmp, not under pytest's basetemp: pytest chmods
/tmp/pytest-of-USER back to 0700 whenever another session starts, which would lock
the vmail/postfix/dovecot/postgres users out of a running server's files. A symlink
in basetemp points to each directory; it is deleted at the end unless a test failed.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.servers.mailstack import MailStack
from tests.servers.postgres import PostgresServer

MAIL_DOMAIN = "example.test"
MAIL_USERS = ("station1@example.test", "station2@example.test")
MAIL_PASSWORD = "secret"

Server = TypeVar("Server", MailStack, PostgresServer)


def _server_root(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
    (tmp_path_factory.getbasetemp() / name).symlink_to(root)
    return root


def _run_server(
    request: pytest.FixtureRequest, server: Server, setup: Callable[[Server], None]
) -> Iterator[Server]:
    """Check, start, yield, stop; keep the files if a test failed.

    A server that is missing or does not start ends the whole run with one line
    (every test that needs it would fail the same way).
    """
    name = type(server).__name__
    try:
        server.install()
    except RuntimeError as exc:
        pytest.exit(f"{name}: {exc}", returncode=3)
    try:
        setup(server)
        server.start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        server.stop()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        pytest.exit(f"{name} did not start: {first} (its logs: {server.root}/log)", returncode=3)
    try:
        yield server
    finally:
        server.stop()
        if request.session.testsfailed:
            print(f"\n{type(server).__name__} files kept in {server.root}")
        else:
            shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def mailstack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MailStack]:
    """A running Postfix + Dovecot for the whole session, with MAIL_USERS / MAIL_PASSWORD.

    Mailboxes are shared by all tests: use unique subjects, or stack.expunge_all(address).
    """

    def add_users(stack: MailStack) -> None:
        for address in MAIL_USERS:
            stack.add_user(address, MAIL_PASSWORD)

    stack = MailStack(_server_root(tmp_path_factory, "mailstack"), domains=[MAIL_DOMAIN])
    yield from _run_server(request, stack, add_users)


@pytest.fixture(scope="session")
def postgres_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PostgresServer]:
    """A running PostgreSQL (trust auth, 127.0.0.1, fsync off) for the whole session."""
    server = PostgresServer(_server_root(tmp_path_factory, "postgres"))
    yield from _run_server(request, server, lambda _: None)


_db_counter = itertools.count(1)


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest, postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty database for this test (dropped afterwards)."""
    label = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    name = f"t{next(_db_counter)}_{label}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)
