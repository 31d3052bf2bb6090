"""The relay end to end: the real ``mailbridge serve`` process, over HTTP, to a mailbox."""

from __future__ import annotations

import email
import secrets
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import httpx
import pytest

from mailbridge.core.receipts import parse_receipt
from tests.e2e.support import smtp_relay, submit
from tests.e2e.test_leaks import MARKERS, NEEDLES
from tests.servers.mailstack import MailStack
from tests.waiting import wait_for

TIP = "Có người lạ mang nhiều gói hàng qua đường mòn sau chợ vào tối thứ bảy."


def _fetch_by_ref(stack: MailStack, ref: str) -> EmailMessage:
    found: list[bytes] = []

    def arrived() -> bool:
        with stack.imap_client("station1@example.test", "secret") as imap:
            imap.select_folder("INBOX", readonly=True)
            uids = imap.search(["HEADER", "X-Mailbridge-Ref", ref])
            if uids:
                found.append(imap.fetch(uids[:1], ["BODY.PEEK[]"])[uids[0]][b"BODY[]"])
        return bool(found)

    wait_for(arrived, f"{ref} in the station mailbox", 30)
    msg = email.message_from_bytes(found[0], policy=default_policy)
    assert isinstance(msg, EmailMessage)
    return msg


@pytest.mark.servers
def test_form_to_station_mailbox_through_postfix_and_dovecot(
        tmp_path: Path, mailstack: MailStack) -> None:
    prefix = "E" + secrets.token_hex(3).upper()
    relay = smtp_relay(tmp_path, mailstack, prefix)
    try:
        with httpx.Client(timeout=30) as client:
            receipt = submit(client, relay.base, "/s/NCS/CHO", TIP, headers=MARKERS)
        assert parse_receipt(receipt.code) == receipt.code
        assert receipt.ref.startswith(prefix + "-")
        msg = _fetch_by_ref(mailstack, receipt.ref)
    finally:
        relay.stop()

    assert msg["From"].addresses[0].addr_spec == "tips@relay.example.test"
    assert msg["To"].addresses[0].addr_spec == "station1@example.test"
    reply_to = msg["Reply-To"].addresses[0].addr_spec
    assert reply_to.startswith("reply+") and reply_to.endswith("@relay.example.test")
    assert len(reply_to.split("@")[0]) - len("reply+") >= 26  # >= 128 bits in base32
    assert msg["Subject"].startswith(f"[{receipt.ref}] ")
    assert " — Có người lạ mang nhiều gói hàng" in msg["Subject"]
    assert msg["Message-ID"].endswith("@relay.example.test>")
    assert msg["X-Mailbridge-Ref"] == receipt.ref
    assert msg["X-Mailbridge-Station"] == "ncs"
    assert msg["X-Mailbridge-Placement"] == "cho"
    assert msg["X-Mailbridge-Category"]
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and TIP in plain.get_content()
    assert html is not None and "Chợ phiên" in html.get_content()
    raw = msg.as_string()
    for needle in NEEDLES:  # what the phone sent stays out of the delivered mail
        assert needle not in raw, needle
    assert receipt.code not in raw and receipt.code[:4] + " " + receipt.code[4:8] not in raw
