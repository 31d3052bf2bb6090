"""Delivery is at least once: a reply lost after DATA means sending again, one Message-ID.

Through the real Postfix, with the connection cut right after the final "." of
DATA reached it (``smtp_cut.CutAfterData``): Postfix has queued the tip, the
relay never saw the 250. The relay sends it again; Dovecot holds two copies;
the poller indexes by Message-ID, so the ledger shows one tip.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime
from pathlib import Path

import pytest

from mailbridge.core.message import Composed, Envelope, Submission, compose
from mailbridge.core.receipts import new_reply_token
from mailbridge.relay.outbox import Backoff, DeliveryWorker
from mailbridge.relay.store import DELIVERED, QUEUED, RelayStore
from tests.relay.outbox_driver import FakeClock, make_settings, smtp_station
from tests.relay.smtp_cut import CutAfterData
from tests.servers.mailstack import MailStack
from tests.station.poller_helpers import (
    PASSWORD,
    RELAY,
    RELAY_DOMAIN,
    RELAY_KEY,
    Ledger,
    imap_settings,
    new_user,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.servers


def test_a_reply_lost_after_data_sends_again_and_the_ledger_shows_one_tip(
        mailstack: MailStack, tmp_path: Path) -> None:
    address = new_user(mailstack)
    text = f"Hai người khiêng bao tải qua suối {secrets.token_hex(4)}"
    message_ids: list[str] = []

    def build(ref: str, date: datetime) -> Composed:
        sub = Submission(station_id="ncs", station_name="Đồn Biên phòng Nậm Cắn",
                         mailbox=address, ref=ref, category_id="smuggling",
                         category_label="Buôn lậu", text=text)
        composed = compose(sub, Envelope(RELAY, RELAY_DOMAIN, new_reply_token()), RELAY_KEY,
                           now=date)
        message_ids.append(composed.message_id)
        return composed

    url = f"sqlite:///{tmp_path / 'relay.db'}"
    clock = FakeClock()
    store = RelayStore(url, clock=clock)
    store.upgrade()
    try:
        with CutAfterData("127.0.0.1", mailstack.smtp_port) as proxy:
            station = smtp_station("ncs", proxy.port, mailbox=address, timeout=15)
            accepted = store.accept(station, build, receipt_hash=secrets.token_hex(32),
                                    reply_token=new_reply_token())
            worker = DeliveryWorker(make_settings(url, station), store,
                                    backoff=Backoff(jitter=0.0))
            assert asyncio.run(worker.deliver_due()) == 0
            assert proxy.swallowed.startswith(b"250 ")  # Postfix had queued it
            [row] = store.list_outbox()
            assert (row.state, row.attempts) == (QUEUED, 1)  # the relay cannot know: again
            clock.advance(seconds=31)
            assert asyncio.run(worker.deliver_due()) == 1
            assert proxy.connections == 2
        [row] = store.list_outbox()
        assert (row.state, row.attempts) == (DELIVERED, 2)
    finally:
        store.close()

    [message_id] = message_ids
    with mailstack.imap_client(address, PASSWORD) as client:
        client.select_folder("INBOX", readonly=True)

        def copies() -> int:
            client.noop()
            return len(client.search(["HEADER", "Message-ID", message_id]))

        wait_for(lambda: copies() == 2, "both copies in the mailbox")
        assert len(client.search(["ALL"])) == 2  # the same bytes twice, nothing else

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path / "attachments", address)
    try:
        ledger.poll(imap_settings(mailstack, address))
        snapshot = ledger.snapshot()
    finally:
        ledger.close()
    assert list(snapshot["tips"]) == [accepted.ref]
    assert snapshot["tips"][accepted.ref][0] == message_id
    assert list(snapshot["messages"]) == [message_id]
    assert [mid for _folder, mid, _flags in snapshot["live"]] == [message_id, message_id]
