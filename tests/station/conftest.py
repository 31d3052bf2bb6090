"""Fixtures of the poller tests: a fresh mailbox and a fresh ledger per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.mailstack import MailStack
from tests.station.poller_helpers import Ledger, new_user


@pytest.fixture
def address(mailstack: MailStack) -> str:
    """A mailbox of its own, so tests on the session-wide stack never see each other."""
    return new_user(mailstack)


@pytest.fixture
def ledger(tmp_path: Path, address: str) -> Iterator[Ledger]:
    led = Ledger(f"sqlite:///{tmp_path}/ledger.db", tmp_path / "attachments", address)
    yield led
    led.close()


@pytest.fixture(params=["sqlite", "postgres"])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """A fresh ledger on SQLite, then on PostgreSQL, for tests without a mailbox."""
    url = (f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    led = Ledger(url, tmp_path / "att", "station@example.test")
    yield led
    led.close()
