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
