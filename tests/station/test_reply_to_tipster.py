"""Answering a tipster from the officers' UI: through the station's own SMTP account (a
real aiosmtpd server standing in for the provider's submission port) to the tip's
Reply-To read from the real Dovecot mailbox, with a copy in Sent that the poller files
in the tip's thread."""

from __future__ import annotations

import contextlib
import dataclasses
import email
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from textual.widgets import TextArea
from textual.worker import WorkerCancelled

from mailbridge.config import Settings, SmtpSettings, Station
from mailbridge.errors import LedgerError
from mailbridge.station.ledger.models import Message, Tip
from mailbridge.station.records import MessageKind
from mailbridge.station.reply import ReplyTarget, reply_to_tipster, target_of
from mailbridge.station.tui import strings as S
from mailbridge.station.tui.access import resolve_access
from mailbridge.station.tui.app import LedgerApp
from mailbridge.station.tui.dialogs import TextDialog
from tests.servers.mailstack import MailStack, free_ports
from tests.station.poller_helpers import (
    PASSWORD,
    Ledger,
    append,
    imap_settings,
    new_ref,
    settings,
    tip,
)
from tests.station.test_tui_app import SIZE, aio
from tests.waiting import wait_for

pytestmark = pytest.mark.servers
TOKEN_ADDRESS = f"reply+{'a' * 32}@relay.example.test"  # what poller_helpers.tip() writes
ANSWER = "Cảm ơn bạn. Chúng tôi đã nhận tin và sẽ kiểm tra."


class Sink:
    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(msg, EmailMessage)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 2.0.0 OK"


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    handler, port = Sink(), free_ports(1)[0]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def station_for(stack: MailStack, address: str, port: int | None) -> Station:
    return Station(id="ncs", name="Đồn Biên phòng Nậm Cha", ref_prefix="NCS", mailbox=address,
                   imap=imap_settings(stack, address, folders=("INBOX", "Sent")),
                   reply_smtp=SmtpSettings(host="127.0.0.1", port=port, tls="none")
                   if port else None, officers={"binh": "Trần Văn Bình"})


def forwarded_tip(stack: MailStack, address: str, ledger: Ledger) -> tuple[int, str, str]:
    """A signed tip in the mailbox and in the ledger: its tip id, ref and Message-ID."""
    ref = new_ref()
    raw = tip(ref)
    append(stack, address, [raw])
    with stack.imap_client(address, PASSWORD) as client:
        if not client.folder_exists("Sent"):
            client.create_folder("Sent")
    ledger.poll(imap_settings(stack, address))
    with ledger.sessions() as s:
        row = s.scalars(select(Tip).where(Tip.ref == ref)).one()
        message_id = s.get(Message, row.message_pk).message_id  # type: ignore[union-attr]
    return row.id, ref, message_id


def sent_folder(stack: MailStack, address: str) -> list[EmailMessage]:
    with stack.imap_client(address, PASSWORD) as client:
        client.select_folder("Sent", readonly=True)
        fetched = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"])
    found = [email.message_from_bytes(f[b"BODY[]"], policy=default_policy)
             for f in fetched.values()]
    return [m for m in found if isinstance(m, EmailMessage)]


@dataclasses.dataclass
class Answering:
    config: Settings
    station: Station
    target: ReplyTarget
    tip_id: int


@pytest.fixture
def answering(mailstack: MailStack, address: str, ledger: Ledger, tmp_path: Path,
              sink: tuple[Sink, int]) -> Answering:
    """A forwarded tip in the mailbox and the ledger, and a station that can answer it."""
    station = station_for(mailstack, address, sink[1])
    tip_id, _, _ = forwarded_tip(mailstack, address, ledger)
    with ledger.sessions() as s:
        target = target_of(s, tip_id)
    return Answering(settings(ledger.url, tmp_path, {"ncs": station}), station, target, tip_id)


def test_the_reply_goes_to_the_tips_reply_to_and_is_filed_in_its_thread(
        mailstack: MailStack, address: str, ledger: Ledger, sink: tuple[Sink, int],
        answering: Answering) -> None:
    handler, _ = sink
    ref, message_id, tip_id = answering.target.ref, answering.target.message_id, answering.tip_id
    assert reply_to_tipster(answering.config, answering.station, answering.target,
                            ANSWER) == TOKEN_ADDRESS

    ((mail_from, rcpt, sent),) = handler.received
    assert (mail_from, rcpt) == (address, [TOKEN_ADDRESS])
    assert sent["In-Reply-To"] == message_id and sent["References"] == message_id
    assert sent["Subject"].startswith(f"Re: [{ref}]")
    body = sent.get_body(("plain",))
    assert body is not None and ANSWER in body.get_content()
    (copy,) = sent_folder(mailstack, address)
    assert copy["Message-ID"] == sent["Message-ID"]

    ledger.poll(imap_settings(mailstack, address, folders=("INBOX", "Sent")))
    with ledger.sessions() as s:
        filed = s.scalars(select(Message).where(Message.message_id == sent["Message-ID"])).one()
        assert (filed.kind, filed.tip_id) == (MessageKind.REPLY.value, tip_id)


def test_a_reply_to_without_the_relay_domain_is_never_used(
        sink: tuple[Sink, int], answering: Answering) -> None:
    config = answering.config
    other = dataclasses.replace(
        config, relay=dataclasses.replace(config.relay, domain="elsewhere.example"))
    with pytest.raises(LedgerError, match="no reply address at elsewhere.example"):
        reply_to_tipster(other, answering.station, answering.target, ANSWER)
    assert sink[0].received == []


async def _settle(app: LedgerApp, pilot: Any) -> None:
    for _ in range(3):
        for worker in list(app.workers):
            with contextlib.suppress(WorkerCancelled):
                await worker.wait()
        await pilot.pause()


@aio
async def test_the_officers_ui_answers_the_tipster(
        mailstack: MailStack, address: str, ledger: Ledger, tmp_path: Path,
        sink: tuple[Sink, int]) -> None:
    handler, port = sink
    config = settings(ledger.url, tmp_path, {"ncs": station_for(mailstack, address, port)})
    _, ref, message_id = forwarded_tip(mailstack, address, ledger)
    app = LedgerApp(config, resolve_access(config, user="binh"), ledger.sessions)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await _settle(app, pilot)
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, TextDialog)
        app.screen.query_one("#text", TextArea).text = ANSWER
        await pilot.press("ctrl+s")
        await _settle(app, pilot)
        wait_for(lambda: len(handler.received) == 1, "the reply at the SMTP server", 10)
        notes = [n.message for n in app._notifications]
        assert S.REPLY_SENT.format(ref=ref, folder="Sent") in notes
    (_, rcpt, sent), = handler.received
    assert rcpt == [TOKEN_ADDRESS] and sent["In-Reply-To"] == message_id


@aio
async def test_without_a_reply_account_the_ui_says_which_table_to_add(
        mailstack: MailStack, address: str, ledger: Ledger, tmp_path: Path) -> None:
    config = settings(ledger.url, tmp_path, {"ncs": station_for(mailstack, address, None)})
    forwarded_tip(mailstack, address, ledger)
    app = LedgerApp(config, resolve_access(config, user="binh"), ledger.sessions)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await _settle(app, pilot)
        await pilot.press("t")
        await pilot.pause()
        app.screen.query_one("#text", TextArea).text = ANSWER
        await pilot.press("ctrl+s")
        await _settle(app, pilot)
        assert any("[stations.reply_smtp]" in n.message for n in app._notifications)
