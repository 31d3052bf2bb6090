"""relay/smtp.py against the whole relay (form, worker, SMTP intake in one loop).

Replies are sent with smtplib to the relay's real SMTP port, from a distinctive
loopback address (127.0.0.77) so no log line can carry it unseen; what the
tipster reads is opened from the store with the receipt code, as /status does.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from email.policy import default as default_policy
from pathlib import Path

import pytest

from mailbridge.config import Settings, load_config
from mailbridge.core.conversation import Sealer
from mailbridge.core.message import Envelope, Submission, compose, signing_key, verify_contract
from mailbridge.core.receipts import ReceiptHasher, derive_key, new_receipt_code, new_reply_token
from mailbridge.errors import RuntimeFailure
from mailbridge.relay.smtp import smtp_port, start_smtp
from mailbridge.relay.store import RelayStore
from tests.e2e.support import (
    MAILDIR_STATION,
    SECRET,
    free_port,
    maildir_files,
    relay_in_thread,
    write_config,
)
from tests.servers.mailstack import MailStack
from tests.unit.test_reply import reply_message
from tests.waiting import wait_for

CLIENT = "127.0.0.77"
OFFICER = "an.nguyen@bienphong.example.vn"
OFFICER_NAME = "Thiếu tá Nguyễn Văn An"
STATION = MAILDIR_STATION.replace(
    'maildir = "mail/ncs"',
    f'maildir = "mail/ncs"\nofficer_senders = ["{OFFICER}"]\n'
    'mail_tips_address = "ncs@relay.example.test"')
MAX_BYTES = 64 * 1024
MAIL_TIPS = 2  # relay.mail_tips_per_hour
MAILSTACK_OFFICER = "station1@example.test"  # a real mailbox of the test mail stack


@dataclass
class Tip:
    token: str
    code: str

    @property
    def address(self) -> str:
        return f"reply+{self.token}@relay.example.test"


@dataclass
class Intake:
    settings: Settings
    store: RelayStore
    port: int
    folder: Path

    def tip(self, *, days_ago: int = 0) -> Tip:
        """A form tip with its conversation, as RelayWeb stores one."""
        secret = self.settings.relay.secret.reveal()
        station = self.settings.stations["ncs"]
        code, token = new_receipt_code(), new_reply_token()
        when = datetime.now(UTC) - timedelta(days=days_ago)
        store = RelayStore(self.settings.relay.database, clock=lambda: when)

        def build(ref: str, date: datetime) -> object:
            sub = Submission(station_id="ncs", station_name=station.name,
                             mailbox=station.mailbox, ref=ref, category_id="drugs",
                             category_label="Ma túy", text="Có người bán hàng cấm ở chợ.")
            return compose(sub, Envelope("tips@relay.example.test", "relay.example.test", token),
                           signing_key(secret), now=date)

        try:
            store.accept(station, build, receipt_hash=self.hash(code),  # type: ignore[arg-type]
                         reply_token=token, keys=self.sealer.new_keys(self.seal_key(code)),
                         category_id="drugs")
        finally:
            store.close()
        return Tip(token, code)

    @property
    def sealer(self) -> Sealer:
        return Sealer(derive_key(self.settings.relay.secret.reveal(), "conversation"))

    def hash(self, code: str) -> str:
        return ReceiptHasher(derive_key(self.settings.relay.secret.reveal(), "receipt")).hash(code)

    def seal_key(self, code: str) -> bytes:
        hasher = ReceiptHasher(derive_key(self.settings.relay.secret.reveal(), "receipt"))
        return hasher.derive(code).seal_key

    def read(self, tip: Tip) -> list[str]:
        """What the tipster reads, opened with the receipt code."""
        conversation = self.store.open_conversation(self.hash(tip.code),
                                                    self.seal_key(tip.code), self.sealer)
        assert conversation is not None
        return [said.text for said in conversation.said]

    def send(self, msg: EmailMessage, to: str, *, sender: str | None = None) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, source_address=(CLIENT, 0),
                          timeout=30) as client:
            client.sendmail(sender if sender is not None else OFFICER, [to],
                            msg.as_bytes(policy=SMTP))


def running_intake(folder: Path, extra: str) -> Iterator[Intake]:
    """The whole relay with its SMTP intake on a free port; *extra* adds [relay] keys."""
    port = free_port()
    path = write_config(folder, free_port(), STATION,
                        extra=f'smtp_listen = "127.0.0.1:{port}"\n{extra}')
    settings = load_config(path, env={"MAILBRIDGE_SECRET": SECRET})
    with relay_in_thread(settings):
        store = RelayStore(settings.relay.database)
        try:
            yield Intake(settings, store, port, folder)
        finally:
            store.close()


@pytest.fixture
def intake(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Intake]:
    caplog.set_level(logging.DEBUG)
    yield from running_intake(tmp_path, f"smtp_max_bytes = {MAX_BYTES}\n"
                                        f"mail_tips_per_hour = {MAIL_TIPS}\n")
    # No client address in any line, whatever the test did (aiosmtpd's own included).
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    assert not [r for r in records if CLIENT in r.getMessage()]
    assert not [r for r in records if r.name.startswith("mail.log")]


THUNDERBIRD = """\
Cảm ơn bà con. Sáng thứ Bảy chúng tôi sẽ cử tổ tuần tra.

Vào 01/12/2026 09:15, mailbridge đã viết:
> Mã tham chiếu: NCS-0042
> Có người bán hàng cấm ở chợ.
>
> --\x20
> Trả lời thư này để trả lời người báo tin; họ đọc bằng mã biên nhận.

--\x20
Thiếu tá Nguyễn Văn An
Đồn Biên phòng Nậm Cha, ĐT 0912 345 678
"""


def reply(tip: Tip, plain: str | None, page: str | None = None, *,
          sender: str = f"{OFFICER_NAME} <{OFFICER}>", **headers: str) -> EmailMessage:
    """A reply as a mail client writes it: quoting headers, its own identity headers."""
    identity = {"Subject": "Re: [NCS-0042] Ma túy — Có người bán hàng cấm ở chợ.",
                "Message_ID": "<officer-reply-1@bienphong.example.vn>",
                "In_Reply_To": "<abc@relay.example.test>",
                "User_Agent": "Mozilla Thunderbird 128.5.0"}
    return reply_message(plain, page, sender=sender, to=tip.address, **{**identity, **headers})


def test_a_thunderbird_reply_reaches_the_tipster_as_its_new_text_only(intake: Intake) -> None:
    tip = intake.tip()
    intake.send(reply(tip, THUNDERBIRD), tip.address)
    texts = intake.read(tip)
    assert texts == ["Cảm ơn bà con. Sáng thứ Bảy chúng tôi sẽ cử tổ tuần tra."]
    for leak in ("Nguyễn Văn An", OFFICER, "0912", "Thunderbird", "officer-reply-1", "Re:"):
        assert leak not in texts[0]
    # On the relay's disk: neither the reply in clear nor anything of the officer's mail.
    written = b"".join(p.read_bytes() for p in intake.folder.rglob("*")
                       if p.is_file() and p.name not in ("mailbridge.toml", ".env"))
    for leak in (texts[0], "Nguyễn Văn An", OFFICER, "officer-reply-1", CLIENT):
        assert leak.encode() not in written, leak


def test_a_gmail_html_only_reply_from_the_station_mailbox(intake: Intake) -> None:
    tip = intake.tip()
    page = ('<div dir="ltr">Đã nhận. Bà con cho biết sạp nào được không?</div><br>'
            '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">Vào Th 3, 1 thg 12, '
            "2026 vào lúc 09:15 mailbridge &lt;tips@relay.example.test&gt; đã viết:<br></div>"
            '<blockquote class="gmail_quote">Mã tham chiếu: NCS-0042</blockquote></div>'
            '<div class="gmail_signature">Đồn Biên phòng Nậm Cha</div>')
    intake.send(reply(tip, None, page, sender="Đồn Nậm Cha <tips@ncs.example.test>"),
                tip.address, sender="tips@ncs.example.test")
    assert intake.read(tip) == ["Đã nhận. Bà con cho biết sạp nào được không?"]


def test_unknown_expired_and_foreign_recipients_are_refused_at_rcpt(intake: Intake) -> None:
    expired = intake.tip(days_ago=intake.settings.relay.conversation_days + 1)
    unknown = Tip(new_reply_token(), "")
    elsewhere = f"reply+{intake.tip().token}@elsewhere.example.com"
    for to in (unknown.address, expired.address, "someone@example.com", elsewhere,
               "postmaster@relay.example.test"):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            intake.send(reply(unknown, "hello"), to)
        assert next(iter(refused.value.recipients.values()))[0] == 550, to


def test_a_sender_that_is_not_the_station_is_refused(intake: Intake) -> None:
    tip = intake.tip()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        intake.send(reply(tip, "Tôi là cán bộ.", sender="Kẻ mạo danh <x@example.com>"),
                    tip.address, sender="x@example.com")
    assert refused.value.smtp_code == 550
    assert intake.read(tip) == []


@pytest.mark.parametrize("headers", [{"Auto_Submitted": "auto-replied"},
                                     {"Precedence": "bulk"}, {"X_Loop": "mailbridge"}])
def test_automatic_mail_is_dropped_with_a_line_without_content(
        intake: Intake, headers: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    tip = intake.tip()
    intake.send(reply(tip, "Tôi đang nghỉ phép đến thứ Hai.", **headers), tip.address)
    assert intake.read(tip) == []
    lines = [r.getMessage() for r in caplog.records if r.name == "mailbridge.relay.smtp"]
    assert any("automatic message was dropped" in line for line in lines)
    assert not [line for line in lines if "nghỉ phép" in line or OFFICER in line]


def test_a_bounce_with_a_null_sender_is_dropped(intake: Intake) -> None:
    tip = intake.tip()
    intake.send(reply(tip, "Undelivered Mail Returned to Sender"), tip.address, sender="")
    assert intake.read(tip) == []


def test_an_oversized_mail_is_refused(intake: Intake) -> None:
    tip = intake.tip()
    with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as refused:
        intake.send(reply(tip, "x" * (MAX_BYTES + 1000)), tip.address)
    assert refused.value.smtp_code == 552
    assert intake.read(tip) == []


def test_a_tip_by_mail_is_anonymised_like_a_form_tip(intake: Intake) -> None:
    msg = EmailMessage()
    msg["From"] = "Vàng A Páo <pao.vang@example.com>"
    msg["To"] = "ncs@relay.example.test"
    msg["Subject"] = "Hàng lạ ở bản Nậm Cha"
    msg["Message-ID"] = "<tipster-1@example.com>"
    msg["Received"] = "from phone-of-pao (10.9.8.7) by mx.example.com"
    msg["X-Mailer"] = "Samsung Email 6.1"
    msg["X-Originating-IP"] = "[10.9.8.7]"
    msg.set_content("Tối qua có xe chở hàng qua suối.\n\nVàng A Páo\nSent from my Samsung")
    msg.add_attachment(b"\xff\xd8photo", maintype="image", subtype="jpeg",
                       filename="IMG_pao_2026.jpg")
    intake.send(msg, "ncs@relay.example.test", sender="pao.vang@example.com")
    maildir = intake.folder / "mail" / "ncs"
    wait_for(lambda: maildir_files(maildir), "the tip by mail delivered", timeout=30)
    data = maildir_files(maildir)[0].read_bytes()
    for leak in (b"pao.vang", b"Samsung", b"10.9.8.7", b"tipster-1", b"IMG_pao", b"X-Peer",
                 b"phone-of-pao", CLIENT.encode()):
        assert leak not in data, leak
    forwarded = message_from_bytes(data, policy=default_policy)
    body = forwarded.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "Hàng lạ ở bản Nậm Cha" in text and "Tối qua có xe chở hàng qua suối." in text
    assert "Vàng A Páo" not in text
    headers = {k.lower(): [str(v)] for k, v in forwarded.items()}
    checked = verify_contract(headers, None,
                              [bytes(signing_key(SECRET).verify_key)])
    assert checked.contract is not None and checked.contract.station_id == "ncs"


def test_a_busy_smtp_port_is_a_runtime_failure(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write_config(tmp_path, free_port(), STATION,
                            extra=f'smtp_listen = "127.0.0.1:{port}"\n')
        settings = load_config(path, env={"MAILBRIDGE_SECRET": SECRET})
        store = RelayStore(settings.relay.database)
        try:
            with pytest.raises(RuntimeFailure, match=r"relay.smtp_listen\): the port is in use"):
                asyncio.run(start_smtp(settings, store, lambda: None))
        finally:
            store.close()


@pytest.mark.servers
def test_postfix_delivers_a_reply_to_the_intake_as_the_reply_domains_mx(
        intake: Intake, mailstack: MailStack) -> None:
    """The officer's own server (Postfix) relays the reply to the intake: its ESMTP, its
    Received header and its envelope, and the text still arrives alone."""
    tip = intake.tip()
    with mailstack.routed("relay.example.test", intake.port):
        with smtplib.SMTP(mailstack.host, mailstack.smtp_port, timeout=30) as client:
            client.sendmail(OFFICER, [tip.address], reply(tip, THUNDERBIRD).as_bytes(policy=SMTP))
        wait_for(lambda: intake.read(tip), "the reply relayed by Postfix", timeout=60)
        # A reply to an unknown token: refused at RCPT, so the officer's server tells him.
        unknown = Tip(new_reply_token(), "")
        with smtplib.SMTP(mailstack.host, mailstack.smtp_port, timeout=30) as client:
            client.sendmail(MAILSTACK_OFFICER, [unknown.address],
                            reply(unknown, "Đã rõ.").as_bytes(policy=SMTP))
        wait_for(lambda: _bounce(mailstack, unknown.token), "the bounce to the officer", 60)
    assert intake.read(tip) == ["Cảm ơn bà con. Sáng thứ Bảy chúng tôi sẽ cử tổ tuần tra."]
    assert b"this reply address is unknown or has expired" in _bounce(mailstack, unknown.token)


def _bounce(stack: MailStack, token: str) -> bytes:
    """The bounce in the officer's mailbox that names *token*, or b""."""
    with stack.imap_client(MAILSTACK_OFFICER, "secret") as imap:
        imap.select_folder("INBOX", readonly=True)
        uids = imap.search(["BODY", token])
        return bytes(imap.fetch(uids[:1], ["BODY.PEEK[]"])[uids[0]][b"BODY[]"]) if uids else b""


def test_a_tip_by_mail_without_text_is_refused(intake: Intake) -> None:
    msg = EmailMessage()
    msg["From"] = "pao.vang@example.com"
    msg["To"] = "ncs@relay.example.test"
    msg.set_content("")
    msg.add_attachment(b"\xff\xd8photo", maintype="image", subtype="jpeg", filename="a.jpg")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        intake.send(msg, "ncs@relay.example.test", sender="pao.vang@example.com")
    assert refused.value.smtp_code == 550
    assert not intake.store.list_outbox()


def test_connections_over_the_cap_get_421_and_are_closed(tmp_path: Path) -> None:
    path = write_config(tmp_path, free_port(), STATION, extra='smtp_listen = "127.0.0.1:0"\n')
    settings = load_config(path, env={"MAILBRIDGE_SECRET": SECRET})
    store = RelayStore(settings.relay.database)

    async def scenario() -> tuple[bytes, bytes, bytes]:
        server = await start_smtp(settings, store, lambda: None, max_connections=1)
        assert server is not None
        port = smtp_port(server)
        first = await asyncio.open_connection("127.0.0.1", port)
        greeting = await first[0].readline()
        second = await asyncio.open_connection("127.0.0.1", port)
        refused, closed = await second[0].readline(), await second[0].read()
        first[1].write(b"QUIT\r\n")
        await first[0].read()
        for _reader, writer in (first, second):
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return greeting, refused, closed

    try:
        greeting, refused, closed = asyncio.run(scenario())
    finally:
        store.close()
    assert greeting.startswith(b"220 ") and refused.startswith(b"421 ") and closed == b""


def test_an_exception_reaches_neither_the_client_nor_the_log_as_text(
        intake: Intake, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(self: RelayStore, token: str) -> None:
        raise RuntimeError(f"database said: {token} Cảm ơn")

    tip = intake.tip()
    monkeypatch.setattr(RelayStore, "tip_by_token", broken)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        intake.send(reply(tip, "Đã rõ."), tip.address)
    code, text = next(iter(refused.value.recipients.values()))
    assert code == 451 and tip.token.encode() not in text and b"database" not in text
    lines = [r.getMessage() for r in caplog.records if r.name == "mailbridge.relay.smtp"]
    assert "smtp: handling a message failed (RuntimeError)" in lines
    assert not [line for line in lines if tip.token in line or "database said" in line]


def test_tips_by_mail_over_the_hourly_limit_wait_at_the_senders_server(intake: Intake) -> None:
    def tip(n: int) -> EmailMessage:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = ("x@example.com", "ncs@relay.example.test",
                                                  f"Tin số {n}")
        msg.set_content("Có hàng lạ qua suối.")
        return msg

    for n in range(MAIL_TIPS):
        intake.send(tip(n), "ncs@relay.example.test", sender="x@example.com")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        intake.send(tip(MAIL_TIPS), "ncs@relay.example.test", sender="x@example.com")
    assert refused.value.smtp_code == 451  # a temporary refusal: the server sends it again later
    assert len(intake.store.list_outbox()) == MAIL_TIPS
