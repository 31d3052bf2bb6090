"""A ledger backup made while the poller indexes the real Dovecot, restored: the
poller goes on from the backup's cursors, with no duplicate and no missed message."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbridge.backup import run_backup, run_restore
from mailbridge.config import Station
from mailbridge.station.ledger.models import Message
from mailbridge.station.records import Counts
from tests.servers.mailstack import MailStack
from tests.station.poller_helpers import (
    Ledger,
    append,
    imap_settings,
    new_ref,
    plain,
    run_in_thread,
    seed_maildir,
    settings,
    tip,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.servers
FIRST, LATER = 200, 5


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def led(ledger_url: str, tmp_path: Path, address: str) -> Iterator[Ledger]:
    ledger = Ledger(ledger_url, tmp_path / "attachments", address)
    yield ledger
    ledger.close()


def test_a_backup_made_mid_stream_restores_and_the_poller_goes_on(
        mailstack: MailStack, address: str, led: Ledger, ledger_url: str,
        tmp_path: Path) -> None:
    imap = imap_settings(mailstack, address)
    station = Station(id="ncs", name="Nậm Cha", ref_prefix="NCS", mailbox=address, imap=imap)
    config = dataclasses.replace(settings(ledger_url, tmp_path / "attachments",
                                          {"ncs": station}), role="station")
    seed_maildir(mailstack, address, [tip(new_ref()) for _ in range(FIRST)])
    poller = led.poller(imap)
    reports: list[Counts] = []
    stop = threading.Event()
    thread = run_in_thread(poller, reports, stop, idle_renew=60.0)
    try:
        wait_for(lambda: led.count(Message) > 0, "the poller's first chunk")
        run_backup(config, tmp_path / "backup", out=lambda _: None)
        append(mailstack, address, [tip(new_ref()) for _ in range(LATER)])
        wait_for(lambda: led.count(Message) == FIRST + LATER, "every message indexed",
                 timeout=90)
    finally:
        stop.set()
        append(mailstack, address, [plain("wake")])  # ends the current IDLE
        thread.join(30)
    poller.conn.close()
    led.poll(imap)
    indexed = led.snapshot()
    assert len(indexed["messages"]) == FIRST + LATER + 1

    run_restore(config, tmp_path / "backup", out=lambda _: None)
    assert led.count(Message) < FIRST + LATER  # the backup is older than the last mail
    led.poll(imap)
    assert led.snapshot() == indexed
