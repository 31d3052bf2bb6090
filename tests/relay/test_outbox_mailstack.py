"""Delivery to a real Postfix (STARTTLS + AUTH), read back from Dovecot over IMAP."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest

from mailbridge.core.message import Composed, Envelope, Submission, compose
from mailbridge.core.receipts import new_reply_token
from mailbridge.relay.outbox import DeliveryWorker
from mailbridge.relay.store import DEAD, DELIVERED, RelayStore
from tests.relay.outbox_driver import (
    RELAY_ADDRESS,
    RELAY_DOMAIN,
    RELAY_KEY,
    builder,
    make_settings,
    smtp_station,
)

pytestmark = pytest.mark.servers

MAILBOX = "station1@example.test"
HEADERS = ("From", "To", "Reply-To", "Subject", "Date", "Message-ID", "X-Mailbridge-Ref",
           "X-Mailbridge-Station", "X-Mailbridge-Category", "X-Mailbridge-Placement", "X-Loop")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RelayStore]:
    s = RelayStore(f"sqlite:///{tmp_path / 'relay.db'}")
    s.upgrade()
    yield s
    s.close()


def fetch_by_message_id(mailstack: Any, message_id: str, timeout: float = 15.0) -> bytes:
    client = mailstack.imap_client(MAILBOX, "secret")
    try:
        client.select_folder("INBOX", readonly=True)
        deadline = time.monotonic() + timeout
        while True:
            uids = client.search(["HEADER", "Message-ID", message_id])
            if uids:
                [uid] = uids
                return bytes(client.fetch([uid], ["RFC822"])[uid][b"RFC822"])
            if time.monotonic() > deadline:
                raise AssertionError(f"{message_id} did not reach {MAILBOX}")
            time.sleep(0.1)
            client.noop()
    finally:
        client.logout()


def test_starttls_auth_delivery_reads_back_over_imap(mailstack: Any, store: RelayStore) -> None:
    station = smtp_station("ncs", mailstack.smtp_port, mailbox=MAILBOX, tls="starttls",
                           username=MAILBOX, password="secret",
                           ca_file=Path(mailstack.ca_file), timeout=15)
    built: list[EmailMessage] = []
    text = f"Xe tải chở hàng qua đường mòn lúc nửa đêm {secrets.token_hex(4)}"

    def build(ref: str, date: datetime) -> Composed:
        sub = Submission(station_id="ncs", station_name="Đồn Biên phòng Nậm Cắn",
                         mailbox=MAILBOX, ref=ref, category_id="smuggling",
                         category_label="Buôn lậu", text=text, placement_id="cho",
                         placement_label="Chợ phiên")
        composed = compose(sub, Envelope(RELAY_ADDRESS, RELAY_DOMAIN, new_reply_token()),
                           RELAY_KEY, now=date)
        built.append(message_from_bytes(composed.data, policy=default_policy))
        return composed

    postfix_log = Path(mailstack.root) / "log" / "postfix.log"
    logins_before = postfix_log.read_text(errors="replace").count(f"sasl_username={MAILBOX}")
    accepted = store.accept(station, build, receipt_hash=secrets.token_hex(32),
                            reply_token=new_reply_token())
    worker = DeliveryWorker(make_settings(str(store.url), station), store)
    assert asyncio.run(worker.deliver_due()) == 1
    assert [r.state for r in store.list_outbox()] == [DELIVERED]

    sent = built[0]
    got = message_from_bytes(fetch_by_message_id(mailstack, str(sent["Message-ID"])),
                             policy=default_policy)
    for name in HEADERS:
        assert str(got[name]) == str(sent[name]), name
    assert got["X-Mailbridge-Ref"] == accepted.ref
    body = got.get_body(("plain",))
    assert body is not None and text in body.get_content()
    logins = postfix_log.read_text(errors="replace").count(f"sasl_username={MAILBOX}")
    assert logins > logins_before  # it really authenticated


def test_unknown_mailbox_is_dead_with_the_server_reply(mailstack: Any,
                                                      store: RelayStore) -> None:
    station = smtp_station("ncs", mailstack.smtp_port, mailbox="nobody@example.test",
                           tls="starttls", username=MAILBOX, password="secret",
                           ca_file=Path(mailstack.ca_file), timeout=15)
    accepted = store.accept(station, builder(station, "x", "e" * 32), receipt_hash="e" * 64,
                            reply_token=new_reply_token())
    worker = DeliveryWorker(make_settings(str(store.url), station), store)
    assert asyncio.run(worker.deliver_due()) == 0
    [row] = store.list_outbox([DEAD])
    assert row.id == accepted.outbox_id
    assert row.last_error.startswith("550 5.1.1 ")
    assert "nobody@example.test" in row.last_error  # Postfix's own words, kept for the admin


def test_untrusted_certificate_is_retried(mailstack: Any, store: RelayStore) -> None:
    station = smtp_station("ncs", mailstack.smtp_port, mailbox=MAILBOX, tls="starttls",
                           username=MAILBOX, password="secret", timeout=15)  # no ca_file
    store.accept(station, builder(station, "x", "f" * 32), receipt_hash="f" * 64,
                 reply_token=new_reply_token())
    worker = DeliveryWorker(make_settings(str(store.url), station), store)
    assert asyncio.run(worker.deliver_due()) == 0
    [row] = store.list_outbox()
    assert row.state == "queued"
    assert "CERTIFICATE_VERIFY_FAILED" in row.last_error


