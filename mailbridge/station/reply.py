"""Answering a tipster from the officers' UI, exactly as a mail client would.

The answer goes from the station's own account (``[stations.reply_smtp]``) to the
tip's Reply-To, ``reply+TOKEN@relay.domain``. The ledger keeps no address, so it
is read from the forwarded message in the mailbox (found by its Message-ID), and
only an address of that form at the relay's domain is used: a Reply-To changed on
the way cannot send an officer's words elsewhere. A copy is appended to the Sent
folder, where the poller files it in the tip's thread like a reply from Thunderbird;
the relay's SMTP intake seals the new text for the tipster.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.policy import default as default_policy
from email.utils import format_datetime, getaddresses, make_msgid

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import Secret, Settings, SmtpSettings, Station
from ..core.message import reply_token_of
from ..core.text import clean_text, one_line
from ..errors import ConfigError, LedgerError, PollError, TokenError
from ..oauth2 import sign_in, token_source, xoauth2
from .ledger.models import Location, Message, Tip
from .poller.imap import ImapConnection


@dataclass(frozen=True)
class ReplyTarget:
    """The tip an officer answers: where its forwarded message sits in the mailbox."""

    station_id: str
    ref: str
    message_id: str
    subject: str
    folders: tuple[str, ...]


def target_of(session: Session, tip_id: int) -> ReplyTarget:
    tip = session.get(Tip, tip_id)
    message = session.get(Message, tip.message_pk) if tip and tip.message_pk else None
    if tip is None or message is None:
        raise LedgerError("this tip has no forwarded message in the mailbox yet: "
                          "run `mailbridge poll` and try again")
    folders = session.scalars(select(Location.folder).where(
        Location.message_pk == message.id, Location.gone.is_(False)).distinct()).all()
    return ReplyTarget(tip.station_id, tip.ref, message.message_id, message.subject,
                       tuple(folders))


def reply_address(conn: ImapConnection, target: ReplyTarget, relay_domain: str) -> str:
    """The tip's ``reply+TOKEN@relay_domain``, read from the message in the mailbox."""
    for folder in target.folders:
        conn.examine(folder)
        uids = conn.search("HEADER", "Message-ID", target.message_id)
        data, _ = conn.fetch(uids[:1], ["BODY.PEEK[HEADER.FIELDS (REPLY-TO)]"])
        for item in data.values():
            raw = next((v for k, v in item.items() if k.startswith(b"BODY")), b"")
            header = raw.decode("ascii", "replace").partition(":")[2]
            token = reply_token_of([a for _, a in getaddresses([header])], relay_domain)
            if token:
                return f"reply+{token}@{relay_domain}"
    raise LedgerError(f"{target.ref}: its message in the mailbox has no reply address at "
                      f"{relay_domain}; answer it from the mail client, or check relay.domain")


def compose_reply(station: Station, to: str, target: ReplyTarget, text: str,
                  now: datetime | None = None) -> EmailMessage:
    """A plain reply in the tip's thread, from the station mailbox, as a client writes one."""
    msg = EmailMessage(policy=default_policy)
    msg["From"] = station.mailbox
    msg["To"] = to
    subject = one_line(target.subject, max_length=200)
    msg["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=station.mailbox.rpartition("@")[2])
    msg["In-Reply-To"] = target.message_id
    msg["References"] = target.message_id
    msg.set_content(clean_text(text) + "\n")
    return msg


@contextlib.contextmanager
def signed_in(smtp: SmtpSettings) -> Iterator[smtplib.SMTP]:
    """Connected, upgraded to TLS as configured and logged in: what ``send`` and
    ``mailbridge check --connect`` use. smtplib's own errors pass through."""
    try:
        context = ssl.create_default_context(
            cafile=str(smtp.ca_file) if smtp.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"stations.reply_smtp.ca_file cannot be read: {exc}; point it at "
                          f"the server's CA certificate (PEM)") from exc
    client: smtplib.SMTP = (
        smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
        if smtp.tls == "tls" else smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout))
    with client:
        if smtp.tls == "starttls":
            client.starttls(context=context)
        _login(client, smtp)
        yield client


def send(smtp: SmtpSettings, msg: EmailMessage) -> None:
    """Submit through the station's own account (smtplib: this runs in a UI thread)."""
    where = f"{smtp.host}:{smtp.port}"
    try:
        with signed_in(smtp) as client:
            client.send_message(msg)
    except (ConfigError, TokenError) as exc:
        raise LedgerError(f"the reply was NOT sent: {exc}") from exc
    except smtplib.SMTPAuthenticationError as exc:
        what = "oauth2" if smtp.oauth2 else "password_env"
        raise LedgerError(f"the reply was NOT sent: login to {where} as {smtp.username!r} "
                          f"failed; check stations.reply_smtp.username and {what}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise LedgerError(f"the reply was NOT sent: {where} answered {exc}; check "
                          f"stations.reply_smtp and try again") from exc


def _login(client: smtplib.SMTP, smtp: SmtpSettings) -> None:
    if smtp.oauth2 is None:
        if smtp.username:
            client.login(smtp.username, smtp.password.reveal())
        return
    client.ehlo_or_helo_if_needed()

    def attempt(token: Secret) -> None:
        # A refusal comes as a 334 challenge (a JSON error) awaiting an empty line.
        client.auth("XOAUTH2", lambda challenge=None: "" if challenge else xoauth2(
            smtp.username, token))

    sign_in(token_source(smtp.oauth2), attempt, smtplib.SMTPAuthenticationError)


def file_in_sent(conn: ImapConnection, folder: str, msg: EmailMessage) -> None:
    try:
        conn.client.append(folder, msg.as_bytes(policy=SMTP), flags=[b"\\Seen"])
    except Exception as exc:  # imapclient raises several kinds; the reply is out already
        raise PollError(f"the reply was sent, but copying it to the folder {folder!r} "
                        f"failed ({type(exc).__name__}); check stations.sent_folder") from exc


def reply_to_tipster(settings: Settings, station: Station, target: ReplyTarget,
                     text: str) -> str:
    """Send *text* to the tipster of *target* and file a copy in Sent; returns the
    address it went to. Blocking (SMTP + IMAP): run it in a worker thread."""
    if station.reply_smtp is None or station.imap is None:
        raise ConfigError(f"stations {station.id}: add a [stations.reply_smtp] table (the "
                          f"mailbox's own SMTP account) and [stations.imap] to answer from "
                          f"here; config/mailbridge.example.toml shows how")
    conn = ImapConnection(station.imap)
    conn.connect()
    try:
        to = reply_address(conn, target, settings.relay.domain)
        msg = compose_reply(station, to, target, text)
        send(station.reply_smtp, msg)
        file_in_sent(conn, station.sent_folder, msg)
    finally:
        conn.close()
    return to
