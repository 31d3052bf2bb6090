"""Kill -9 the relay while it takes a stream of tips: nothing acknowledged is lost or doubled.

"Doubled" means what the station sees. Into a Maildir, delivery is idempotent by
file name, so there is exactly one file per tip. Through the real Postfix a tip
sent just before the kill may be sent again after it (at least once, same
Message-ID): the mailbox may hold two copies, the ledger must hold one tip.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mailbridge.config import load_config
from mailbridge.relay.store import DELIVERED, RelayStore
from mailbridge.station.ledger.models import Message, Tip
from mailbridge.station.poller.imap import ImapConnection
from mailbridge.station.poller.sync import ImapPoller
from tests.e2e.support import (
    MAILDIR_STATION,
    RelayProcess,
    free_port,
    maildir_files,
    smtp_station,
    submit,
    write_config,
)
from tests.servers.mailstack import MailStack
from tests.station.poller_helpers import PASSWORD, Ledger, imap_settings, new_user
from tests.waiting import wait_for

_HEADERS = BytesHeaderParser(policy=default_policy)


def _refs_in(maildir: Path) -> Counter[str]:
    refs: Counter[str] = Counter()
    for path in maildir_files(maildir):
        refs[str(_HEADERS.parsebytes(path.read_bytes())["X-Mailbridge-Ref"])] += 1
    return refs


def _kill9_while_streaming(config: Path, port: int) -> tuple[set[str], RelayProcess]:
    """Three phones submit until the relay is killed -9 at a random moment; it is
    started again. Returns the acknowledged refs and the running relay."""
    relay = RelayProcess(config, port).start()
    acknowledged: list[str] = []
    stop = threading.Event()

    def stream(worker: int) -> None:
        with httpx.Client(timeout=10) as client:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    receipt = submit(client, relay.base, "/s/ncs/cho",
                                     f"Luồng {worker}, tin {n}: thấy hàng lậu qua suối.")
                except (httpx.TransportError, AssertionError):
                    return  # the relay died mid-request: that tip was never acknowledged
                acknowledged.append(receipt.ref)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    kill_after = random.randint(10, 40)  # land anywhere: mid-accept, mid-send, mid-mark
    wait_for(lambda: len(acknowledged) >= kill_after, f"{kill_after} acknowledged tips", 60)
    relay.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    acked = set(acknowledged)
    assert len(acked) == len(acknowledged)
    return acked, RelayProcess(config, port).start()


def _drained(database: Path) -> set[str]:
    """Refs of every row the restarted relay delivered, once nothing is pending."""
    store = RelayStore(f"sqlite:///{database}")
    try:
        wait_for(lambda: store.pending_count() == 0, "the outbox to drain", 60)
        return {row.ref for row in store.list_outbox([DELIVERED])}
    finally:
        store.close()


def test_every_acknowledged_tip_is_delivered_exactly_once_after_kill9(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port, MAILDIR_STATION)
    acked, relay = _kill9_while_streaming(config, port)
    maildir = tmp_path / "mail" / "ncs"
    try:
        delivered = _drained(tmp_path / "relay.db")
        wait_for(lambda: set(_refs_in(maildir)) == delivered,
                 "every delivered row's file in the Maildir", 60)
    finally:
        relay.stop()
    files = _refs_in(maildir)
    doubles = {ref: n for ref, n in files.items() if n > 1}
    assert not doubles, f"delivered more than once: {doubles}"
    assert acked <= delivered


def _mailbox(stack: MailStack, address: str) -> dict[str, list[str]]:
    """X-Mailbridge-Ref -> the Message-ID of each of its copies in the INBOX."""
    copies: dict[str, list[str]] = defaultdict(list)
    fields = "[HEADER.FIELDS (MESSAGE-ID X-MAILBRIDGE-REF)]"
    with stack.imap_client(address, PASSWORD) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        fetched = client.fetch(uids, [f"BODY.PEEK{fields}"]) if uids else {}
        for data in fetched.values():
            headers = _HEADERS.parsebytes(data[f"BODY{fields}".encode()])
            copies[str(headers["X-Mailbridge-Ref"])].append(str(headers["Message-ID"]))
    return copies


@pytest.mark.servers
def test_after_kill9_through_postfix_the_ledger_holds_each_tip_once(
        tmp_path: Path, mailstack: MailStack) -> None:
    address = new_user(mailstack)
    port = free_port()
    station = smtp_station(mailstack).replace('mailbox = "station1@example.test"',
                                              f'mailbox = "{address}"')
    config = write_config(tmp_path, port, station)
    with (tmp_path / ".env").open("a") as env:
        env.write("STATION_SMTP_PASSWORD=secret\n")
    acked, relay = _kill9_while_streaming(config, port)
    try:
        delivered = _drained(tmp_path / "relay.db")
        wait_for(lambda: set(_mailbox(mailstack, address)) == delivered,
                 "every delivered row in the mailbox", 60)
    finally:
        relay.stop()
    assert acked <= delivered
    # Copies of one tip (a send the kill interrupted after DATA) share one Message-ID.
    ids = {ref: set(copies) for ref, copies in _mailbox(mailstack, address).items()}
    assert {ref: found for ref, found in ids.items() if len(found) != 1} == {}

    settings = load_config(config)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path / "attachments", address)
    poller = ImapPoller(ImapConnection(imap_settings(mailstack, address)), ledger.store,
                        relay=settings.relay_identity(), max_message_bytes=2 * 1024 * 1024)
    try:
        poller.poll()
        with ledger.sessions() as session:
            tips = Counter(session.scalars(select(Tip.ref)))
            messages = Counter(session.scalars(select(Message.message_id)))
    finally:
        poller.conn.close()
        ledger.close()
    assert tips == Counter(ids.keys()), "the ledger holds each delivered tip exactly once"
    assert messages == Counter(next(iter(found)) for found in ids.values())
