"""Self-test of the real mail stack: what the poller and outbox tests rely on."""

from __future__ import annotations

import email
import smtplib
import socket
import ssl
import time
import uuid
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest
from imapclient import IMAPClient

from tests.servers.fixtures import MAIL_PASSWORD, MAIL_USERS
from tests.servers.mailstack import MailStack

pytestmark = pytest.mark.servers

STATION1, STATION2 = MAIL_USERS


def make_message(to: str, subject: str, body: str = "hello from the tip box\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "relay@relay.test"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def smtp_session(stack: MailStack) -> smtplib.SMTP:
    """An SMTP session already upgraded with STARTTLS (certificate verified)."""
    smtp = smtplib.SMTP(stack.host, stack.smtp_port, timeout=10)
    smtp.ehlo()
    smtp.starttls(context=stack.ssl_context())
    smtp.ehlo()
    return smtp


def wait_for_subject(client: IMAPClient, subject: str, timeout: float = 10.0) -> list[int]:
    """UIDs in the selected folder with SUBJECT, polling until delivery (~0.1 s) is done."""
    deadline = time.monotonic() + timeout
    while not (uids := client.search(["HEADER", "Subject", subject])):
        assert time.monotonic() < deadline, f"no message with subject {subject!r}"
        time.sleep(0.05)
        client.noop()
    return list(uids)


def test_starttls_delivery_read_back_over_imaps(mailstack: MailStack) -> None:
    subject = f"selftest {uuid.uuid4()}"
    body = "Có người vượt biên ở chợ.\n"
    with smtp_session(mailstack) as smtp:
        smtp.send_message(make_message(STATION1, subject, body))
    with mailstack.imap_client(STATION1, MAIL_PASSWORD, ssl=True) as client:
        client.select_folder("INBOX")
        uids = wait_for_subject(client, subject)
        raw = client.fetch(uids, ["RFC822"])[uids[0]][b"RFC822"]
    msg = email.message_from_bytes(raw, policy=default_policy)
    assert msg["Subject"] == subject
    text = msg.get_body().get_content()  # type: ignore[union-attr]
    assert text.replace("\r\n", "\n") == body
    assert any(mailstack.maildir(STATION1).glob("*/*,S=*"))


def test_imap_capabilities_and_condstore(mailstack: MailStack) -> None:
    with mailstack.imap_client(STATION2, MAIL_PASSWORD) as client:
        caps = set(client.capabilities())
        assert {b"CONDSTORE", b"QRESYNC", b"IDLE", b"ENABLE"} <= caps
        assert set(client.enable("CONDSTORE", "QRESYNC")) == {b"CONDSTORE", b"QRESYNC"}
        assert b"HIGHESTMODSEQ" in client.select_folder("INBOX")


def test_relaying_is_refused_even_after_auth(mailstack: MailStack) -> None:
    with smtp_session(mailstack) as smtp:
        smtp.login(STATION1, MAIL_PASSWORD)  # Dovecot SASL works ...
        for rcpt in ("someone@elsewhere.test", "nobody@example.test"):
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                smtp.send_message(make_message(rcpt, "relay attempt"))
            code, reason = refused.value.recipients[rcpt]
            assert 500 <= code < 600, reason  # ... but grants no relaying


def test_idle_sees_new_message(mailstack: MailStack) -> None:
    subject = f"idle {uuid.uuid4()}"
    with mailstack.imap_client(STATION2, MAIL_PASSWORD) as client:
        client.select_folder("INBOX")
        client.idle()
        with smtp_session(mailstack) as smtp:
            smtp.send_message(make_message(STATION2, subject))
        deadline = time.monotonic() + 10.0  # Dovecot batches inotify events: ~0.5 s
        seen = False
        while not seen and time.monotonic() < deadline:
            responses = client.idle_check(timeout=deadline - time.monotonic())
            seen = any(len(r) > 1 and r[1] == b"EXISTS" for r in responses)
        client.idle_done()
        assert seen, "IDLE reported no EXISTS within 10 s"
        assert wait_for_subject(client, subject)


def test_self_signed_certificate_is_not_trusted_by_default(mailstack: MailStack) -> None:
    context = ssl.create_default_context()
    with (
        socket.create_connection((mailstack.host, mailstack.imaps_port), timeout=10) as sock,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(sock, server_hostname="localhost")


def test_add_user_while_running_and_expunge(mailstack: MailStack) -> None:
    address = f"new-{uuid.uuid4().hex[:8]}@example.test"
    mailstack.add_user(address, "other-secret")
    with smtp_session(mailstack) as smtp:
        smtp.send_message(make_message(address, "welcome"))
    with mailstack.imap_client(address, "other-secret") as client:
        client.select_folder("INBOX")
        assert wait_for_subject(client, "welcome")
        mailstack.expunge_all(address)
        client.noop()
        assert client.search(["ALL"]) == []
