"""The two-way channel from the tipster's side, with real parts: a station reply sealed by
``add_reply``, read at /status in Chromium without JavaScript, information added there
arriving threaded in the station mailbox (real Postfix and Dovecot) and linked by the
poller; afterwards nothing of either text is in the relay's files in clear."""

from __future__ import annotations

import email
import re
import secrets
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mailbridge.core.message import RelayIdentity, signing_key
from mailbridge.relay.store import RelayStore
from mailbridge.station.ledger.models import Message, Tip
from mailbridge.station.records import MessageKind
from tests.e2e.conftest import RunningRelay
from tests.e2e.support import (
    MAILDIR_STATION,
    SECRET,
    RelayProcess,
    free_port,
    maildir_files,
    smtp_relay,
    submit,
    write_config,
)
from tests.e2e.test_relay_e2e import _fetch_by_ref
from tests.servers.mailstack import MailStack
from tests.station.poller_helpers import Ledger, imap_settings
from tests.waiting import wait_for

REPLY = "Cảm ơn bạn. Tổ công tác sẽ đến bến sông vào sáng mai."
MORE = "Chiếc thuyền màu xanh, có hai người, thường đến lúc trời tối."
ADD_ACTION = re.compile(r'<form method=post action="/status/add"')


def read(path: Path) -> EmailMessage:
    msg = email.message_from_bytes(path.read_bytes(), policy=default_policy)
    assert isinstance(msg, EmailMessage)
    return msg


def token_of(msg: EmailMessage) -> str:
    """The reply token of a forwarded tip, from its Reply-To (reply+TOKEN@relay)."""
    address = msg["Reply-To"].addresses[0].addr_spec
    return str(address.partition("+")[2].partition("@")[0])


def delivered(mail: Path, count: int) -> list[EmailMessage]:
    wait_for(lambda: len(maildir_files(mail)) >= count, f"{count} messages delivered", 30)
    return [read(p) for p in maildir_files(mail)]


def status_code_page(client: httpx.Client, base: str, code: str) -> str:
    page = client.post(f"{base}/status", data={"code": code, "lang": "vi"})
    assert page.status_code == 200, page.text[:1000]
    return page.text


def add_more(client: httpx.Client, base: str, code: str, page: str, text: str) -> str:
    token = re.search(r'name=t value="([^"]+)"', page)
    assert token is not None
    sent = client.post(f"{base}/status/add",
                       data={"t": token.group(1), "lang": "vi", "code": code, "text": text})
    assert sent.status_code == 200, sent.text[:1000]
    return sent.text


@pytest.mark.browser
def test_the_tipster_reads_the_reply_and_adds_more_without_javascript(
        browser: Any, running_relay: RunningRelay, artifacts: Path) -> None:
    mail = running_relay.folder / "mail" / "ncs"
    context = browser.new_context(java_script_enabled=False,
                                  viewport={"width": 360, "height": 640}, locale="vi-VN")
    store = RelayStore(f"sqlite:///{running_relay.folder / 'relay.db'}")
    try:
        page = context.new_page()
        page.goto(f"{running_relay.base}/s/ncs/cho")
        page.click("label[for=c-smuggling]")
        page.fill("#text", "Có người chở hàng qua sông vào ban đêm.")
        before = len(maildir_files(mail))
        with page.expect_navigation():
            page.click("button[type=submit]")
        code = page.locator(".code").inner_text()
        (tip, *_) = delivered(mail, before + 1)[before:]
        assert store.add_reply(token_of(tip), REPLY, station_id="ncs")

        with page.expect_navigation():
            page.click("a[href^='/status']")  # the receipt page's link
        page.fill("#code", code.replace(" ", "-"))
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert "/status" in page.url and code.replace(" ", "") not in page.url
        text = page.locator("body").inner_text()
        assert "Đã nhận tin: rồi" in text and "Đã chuyển đến đồn: rồi" in text
        assert REPLY in text
        assert "Đồn Biên phòng Nậm Cha" in text  # the station's name, nothing of an officer
        page.screenshot(path=str(artifacts / "status-reply-vi.png"), full_page=True)

        page.fill("#text", MORE)
        with page.expect_navigation():
            page.click("form[action='/status/add'] button[type=submit]")
        assert "Đã gửi. Đồn sẽ nhận được." in page.locator("body").inner_text()
        assert MORE in page.locator(".msg").last.inner_text()
        page.screenshot(path=str(artifacts / "status-followup-vi.png"), full_page=True)
        followup = delivered(mail, before + 2)[before + 1]
        assert followup["References"] == tip["Message-ID"]
        assert followup["X-Mailbridge-Ref"] == tip["X-Mailbridge-Ref"]
    finally:
        store.close()
        context.close()


@pytest.mark.servers
def test_a_followup_arrives_threaded_through_postfix_and_the_poller_links_it(
        tmp_path: Path, mailstack: MailStack) -> None:
    relay = smtp_relay(tmp_path, mailstack, "C" + secrets.token_hex(3).upper())
    try:
        with httpx.Client(timeout=30) as client:
            receipt = submit(client, relay.base, "/s/ncs/cho", "Có người lạ ở chợ phiên.")
            tip = _fetch_by_ref(mailstack, receipt.ref)
            page = status_code_page(client, relay.base, receipt.code)
            assert "Đã chuyển đến đồn: rồi" in page
            add_more(client, relay.base, receipt.code, page, MORE)
        wait_for(lambda: len(_refs(mailstack, receipt.ref)) == 2, "the follow-up", 30)
    finally:
        relay.stop()
    (followup,) = [m for m in _refs(mailstack, receipt.ref) if m["Message-ID"] !=
                   tip["Message-ID"]]
    assert followup["In-Reply-To"] == tip["Message-ID"]
    assert followup["References"] == tip["Message-ID"]
    assert followup["Reply-To"] == tip["Reply-To"]
    body = followup.get_body(("plain",))
    assert body is not None and MORE in body.get_content()

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path / "att",
                    "station1@example.test")
    identity = RelayIdentity("tips@relay.example.test", (bytes(signing_key(SECRET).verify_key),))
    poller = ledger.poller(imap_settings(mailstack, "station1@example.test"))
    poller.relay = identity
    try:
        poller.poll()
    finally:
        poller.conn.close()
    try:
        with ledger.sessions() as s:
            (row,) = s.scalars(select(Tip).where(Tip.ref == receipt.ref)).all()
            thread = {m.message_id: (m.kind, m.tip_id) for m in
                      s.scalars(select(Message).where(Message.ref == receipt.ref))}
        assert thread == {tip["Message-ID"]: (MessageKind.TIP.value, row.id),
                          followup["Message-ID"]: (MessageKind.FOLLOWUP.value, row.id)}
    finally:
        ledger.close()


def _refs(stack: MailStack, ref: str) -> list[EmailMessage]:
    with stack.imap_client("station1@example.test", "secret") as imap:
        imap.select_folder("INBOX", readonly=True)
        uids = imap.search(["HEADER", "X-Mailbridge-Ref", ref])
        fetched = imap.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    found = [email.message_from_bytes(f[b"BODY[]"], policy=default_policy)
             for f in fetched.values()]
    return [m for m in found if isinstance(m, EmailMessage)]


def test_after_a_conversation_no_reply_or_followup_text_is_in_the_relay_files(
        tmp_path: Path) -> None:
    # Mostly ASCII, so the mail's body is quoted-printable, not base64, and the marker
    # stays greppable wherever the bytes are (checked in the Maildir below).
    reply = REPLY + " reply-mark-QX81"
    more = ("followup-mark-ZK52 " + "the blue boat comes after dark, two men aboard. " * 12).strip()
    port = free_port()
    config = write_config(tmp_path, port, MAILDIR_STATION)
    relay = RelayProcess(config, port).start()
    mail = tmp_path / "mail" / "ncs"
    store = RelayStore(f"sqlite:///{tmp_path / 'relay.db'}")
    try:
        with httpx.Client(timeout=30) as client:
            receipt = submit(client, relay.base, "/s/ncs/cho", "Có người lạ ở bản.")
            (tip,) = delivered(mail, 1)
            assert store.add_reply(token_of(tip), reply, station_id="ncs")
            page = status_code_page(client, relay.base, receipt.code)
            assert reply in page  # what the files must not hold is readable with the code
            assert more in add_more(client, relay.base, receipt.code, page, more)
            delivered(mail, 2)
            # erased from the outbox once delivered, and the WAL folded into the database
            wait_for(lambda: _nowhere(tmp_path, b"followup-mark-ZK52"), "the follow-up erased",
                     30)
    finally:
        store.close()
        relay.stop()
    assert b"followup-mark-ZK52" in b"".join(p.read_bytes() for p in maildir_files(mail))
    relay_files = [p for p in tmp_path.rglob("*") if p.is_file() and mail not in p.parents]
    assert {"relay.db", "serve.out", "serve.err"} <= {p.name for p in relay_files}
    for path in relay_files:
        data = path.read_bytes()
        for needle in ("reply-mark-QX81", "followup-mark-ZK52", REPLY):
            assert needle.encode() not in data, f"{needle!r} in {path}"
            assert needle.encode("utf-16-le") not in data, f"{needle!r} (utf-16) in {path}"


def _nowhere(folder: Path, needle: bytes) -> bool:
    return not any(needle in p.read_bytes() for p in folder.glob("relay.db*") if p.is_file())
