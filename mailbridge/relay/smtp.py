"""SMTP intake (aiosmtpd, in the relay's asyncio loop): officers' replies and tips by mail.

Not an open relay: RCPT takes only ``reply+TOKEN@relay.domain`` with a known,
unexpired token, and a station's ``mail_tips_address`` where one is set; every
other recipient is 550 before any data is sent. No AUTH: the 160-bit token in the
address is what lets a reply in, and the sender must be the station's mailbox or
one of its ``officer_senders``.

From a reply only the new text is kept (``core/reply.py``) and handed to
``RelayStore.add_reply``, sealed to the tip. A tip by mail is rebuilt from its
text alone with the same contract as a form tip (``compose``, ``accept``): no
header, address, client name or attachment of the original goes on. Its sender
gets no receipt: mail sent back would be a trace of the tip in their own mailbox.

Automatic mail (auto-replies, lists, bounces, our own loop header) is dropped
with one line that names its kind only. aiosmtpd's ``mail.log`` (it names the
peer on every line) is silenced, no ``X-Peer`` is ever added (this handler
writes its own ``handle_DATA``) and an exception reaches the client as a fixed
451, never as its text.
"""

from __future__ import annotations

import asyncio
import email
import errno
import logging
import ssl
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.policy import default as default_policy
from email.utils import getaddresses, parseaddr
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from ..config import Settings, Station
from ..core.message import ciphertext, hour_of, is_encrypted, reply_token_of, signing_key
from ..core.receipts import derive_key, is_reply_token
from ..core.reply import noise, reply_text
from ..errors import ConfigError, OpenPGPError, RuntimeFailure
from ..openpgp import Decryptor
from .ratelimit import RateLimiter
from .store import RelayStore
from .unreceipted import accept_unreceipted

log = logging.getLogger(__name__)

OK = "250 2.0.0 OK"
NOT_HERE = "550 5.7.1 this relay accepts mail only for the reply addresses of its tips"
UNKNOWN = "550 5.1.1 this reply address is unknown or has expired"
NOT_OFFICER = "550 5.7.1 only the station's own mailbox may answer this tip"
EMPTY = "550 5.6.0 the reply holds no new text above the quoted tip"
ENCRYPTED = ("550 5.7.1 this relay cannot read an encrypted reply: send it again without "
             "encryption")
NO_TEXT = "550 5.6.0 only the text of a tip is forwarded, and this mail has none"
TOO_MANY = "451 4.7.0 too many tips by mail this hour: send it again later"
TRY_LATER = "451 4.3.0 the reply could not be stored now: send it again later"
MAIL_TIP_CATEGORY = "other"
# Open SMTP connections at once: mail servers deliver over a few; more is a flood.
MAX_CONNECTIONS = 50


@dataclass
class _Rcpt:
    """What RCPT accepted: a reply token and its station, or a station's tip address."""

    station: Station
    token: str = ""


@dataclass
class Intake:
    """The aiosmtpd handler. Blocking store calls run in threads."""

    settings: Settings
    store: RelayStore
    on_accepted: Callable[[], None] = lambda: None
    # What RCPT accepted, per envelope: aiosmtpd makes a new one per transaction and at
    # RSET, so an abandoned one leaves nothing behind.
    accepted: weakref.WeakKeyDictionary[Envelope, list[_Rcpt]] = field(
        default_factory=weakref.WeakKeyDictionary)

    def __post_init__(self) -> None:
        relay = self.settings.relay
        self.domain = relay.domain.lower()
        self.signer = signing_key(relay.secret.reveal())
        self.by_tip_address = {s.mail_tips_address: s for s in self.settings.stations.values()
                               if s.mail_tips_address}
        # Tips by mail, all senders together: a flood waits (451) at the sender's server.
        limit = relay.mail_tips_per_hour
        self.mail_tips = RateLimiter(derive_key(relay.secret.reveal(), "mail-tips"), limit,
                                     total_per_hour=limit)
        # Replies encrypted to the relay's own key (Thunderbird); plain ones need none.
        self.decrypt = None if relay.openpgp_secret_key is None else Decryptor(
            secret_key=relay.openpgp_secret_key, passphrase=relay.openpgp_passphrase.reveal(),
            key="relay.openpgp_secret_key")

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        """No AUTH line: there is nothing to log in to, so nothing to guess (aiosmtpd
        would announce an empty AUTH after STARTTLS)."""
        session.host_name = hostname
        return [line for line in responses if not line.startswith("250-AUTH")]

    # -- RCPT: not an open relay --------------------------------------------------

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        found = await self.recipient(address)
        if isinstance(found, str):
            log.info("smtp: a recipient was refused (%s)", found[:3])
            return found
        envelope.rcpt_tos.append(address)
        self.accepted.setdefault(envelope, []).append(found)
        return OK

    async def recipient(self, address: str) -> _Rcpt | str:
        """What *address* is to this relay, or the 550 line that refuses it."""
        lowered = address.strip().strip("<>").lower()
        if lowered in self.by_tip_address:
            return _Rcpt(self.by_tip_address[lowered])
        token = reply_token_of([lowered], self.domain)
        if token is None:
            return NOT_HERE
        if not is_reply_token(token):
            return UNKNOWN
        tip = await asyncio.to_thread(self.store.tip_by_token, token)
        oldest = hour_of(datetime.now(UTC)) - timedelta(days=self.settings.relay.conversation_days)
        station = self.settings.station(tip.station_id) if tip else None
        if tip is None or station is None or tip.created_hour <= oldest:
            return UNKNOWN
        return _Rcpt(station, token)

    # -- DATA --------------------------------------------------------------------

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rcpts = self.accepted.pop(envelope, [])
        data = envelope.original_content or b""
        # Parsing runs in a thread: up to smtp_max_bytes of anyone's mail must not hold
        # up the form, which shares this loop.
        msg = await asyncio.to_thread(email.message_from_bytes, data, policy=default_policy)
        kind = noise(msg, envelope.mail_from or "")
        if kind:
            log.info("smtp: an automatic message was dropped (%s)", kind)
            return OK
        replies = [r for r in rcpts if r.token]
        if replies:
            return await self.reply(msg, replies)
        text = await asyncio.to_thread(_tip_text, msg)
        if not text:  # a photo alone, say: the station would get an empty tip
            return NO_TEXT
        if not self.mail_tips.hit({"client": session.peer}):
            log.info("smtp: a tip by mail waits: relay.mail_tips_per_hour was reached")
            return TOO_MANY
        for rcpt in rcpts:  # a tip by mail, once per station it was sent to
            await asyncio.to_thread(self.accept_tip, rcpt.station, text)
        self.on_accepted()
        return OK

    async def reply(self, msg: Message, replies: list[_Rcpt]) -> str:
        """Store the new text of an officer's reply for each tip it answers."""
        name, sender = _sender(msg)
        for rcpt in replies:
            if sender not in (rcpt.station.mailbox.lower(), *rcpt.station.officer_senders):
                log.info("smtp: a reply for station %s came from an address that may not "
                         "answer", rcpt.station.id)
                return NOT_OFFICER
        if is_encrypted(msg):
            opened = await asyncio.to_thread(self._decrypted, msg)
            if opened is None:
                return ENCRYPTED
            msg = opened
        text = await asyncio.to_thread(reply_text, msg, remove=[name, sender, *_addresses(msg)])
        if not text:
            return EMPTY
        for rcpt in replies:
            stored = await asyncio.to_thread(self.store.add_reply, rcpt.token, text,
                                             station_id=rcpt.station.id)
            if not stored:
                return UNKNOWN
            # DEBUG only: a journal timestamp beside it would date the reply to the minute.
            log.debug("smtp: a reply for station %s was stored", rcpt.station.id)
        return OK

    def _decrypted(self, msg: Message) -> Message | None:
        """The reply inside a PGP/MIME message, if the relay has the key it is for."""
        armour = ciphertext(msg)
        if self.decrypt is None or armour is None:
            log.info("smtp: an encrypted reply was refused (%s)",
                     "no relay.openpgp_secret_key" if armour else "malformed")
            return None
        try:
            return email.message_from_bytes(self.decrypt(armour), policy=default_policy)
        except OpenPGPError as exc:
            log.info("smtp: an encrypted reply could not be decrypted: %s", exc)
            return None

    def accept_tip(self, station: Station, text: str) -> None:
        """A tip by mail (``_tip_text``), composed and stored as a form tip is, without
        receipt (``accept_unreceipted``)."""
        category = station.category(MAIL_TIP_CATEGORY) or station.categories[0]
        accept_unreceipted(self.settings, self.store, self.signer, station, category, text)
        log.debug("smtp: a tip by mail for station %s was stored", station.id)

    async def handle_exception(self, error: Exception) -> str:
        """Never the exception's text to the client, nor to the log (it may quote mail)."""
        log.error("smtp: handling a message failed (%s)", type(error).__name__)
        return TRY_LATER


def _sender(msg: Message) -> tuple[str, str]:
    name, address = parseaddr(str(msg.get("From", "")))
    return name, address.lower()


def _tip_text(msg: Message) -> str:
    """All a tip by mail forwards: its subject and new text, without the sender's name,
    address, "Sent from my …" line or any other address."""
    name, sender = _sender(msg)
    body = reply_text(msg, remove=[name, sender, *_addresses(msg)])
    subject = reply_text(_text_message(str(msg.get("Subject", ""))), remove=[name, sender])
    return "\n\n".join(part for part in (subject, body) if part)


def _addresses(msg: Message) -> list[str]:
    """Every name and address in the message's address headers, to keep out of the text."""
    pairs = getaddresses([str(v) for h in ("From", "Sender", "Reply-To", "To", "Cc")
                          for v in msg.get_all(h, [])])
    return [part for pair in pairs for part in pair if part]


def _text_message(text: str) -> Message:
    msg = Message()
    msg.set_payload(text.encode("utf-8"))
    msg.set_type("text/plain")
    msg.set_param("charset", "utf-8")
    return msg


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The STARTTLS context of ``relay.smtp_tls_cert`` / ``smtp_tls_key``, if set."""
    relay = settings.relay
    if relay.smtp_tls_cert is None or relay.smtp_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(relay.smtp_tls_cert, relay.smtp_tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"relay.smtp_tls_cert / relay.smtp_tls_key: cannot load "
                          f"{relay.smtp_tls_cert} with its key ({type(exc).__name__}): name "
                          f"a PEM certificate and its private key this user may read") from exc
    return context


class _Capped(SMTP):
    """aiosmtpd's SMTP with a cap on open connections: each holds an open file, and the
    form's connections need them too. Over the cap a client gets 421 and is closed."""

    def __init__(self, live: set[_Capped], cap: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.live, self.cap, self.refused = live, cap, False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.live) >= self.cap:
            self.refused = True
            log.info("smtp: a connection was refused (%d open)", len(self.live))
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(b"421 4.7.0 too many connections, try again later\r\n")
            transport.close()
            return
        self.live.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if not self.refused:
            self.live.discard(self)
            super().connection_lost(error)

    def eof_received(self) -> bool | None:
        return None if self.refused else super().eof_received()


async def start_smtp(settings: Settings, store: RelayStore, on_accepted: Callable[[], None],
                     *, max_connections: int = MAX_CONNECTIONS) -> asyncio.Server | None:
    """Listen on ``relay.smtp_listen`` in the running loop; None when it is unset."""
    if settings.relay.smtp_listen is None:
        return None
    logging.getLogger("mail.log").setLevel(logging.CRITICAL + 1)  # it names every peer
    handler = Intake(settings, store, on_accepted)
    context = tls_context(settings)
    host, port = settings.relay.smtp_listen

    live: set[_Capped] = set()

    def protocol() -> SMTP:
        return _Capped(live, max_connections, handler,
                       data_size_limit=settings.relay.smtp_max_bytes, enable_SMTPUTF8=True,
                       hostname=settings.relay.domain, ident="mailbridge", tls_context=context,
                       timeout=60, auth_exclude_mechanism=("LOGIN", "PLAIN"))

    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(protocol, host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:  # the other process may go away: systemd retries
            raise RuntimeFailure(f"cannot listen for SMTP on {host}:{port} (relay.smtp_listen): "
                                 f"the port is in use; stop the process that holds it or "
                                 f"choose another port") from exc
        raise ConfigError(f"cannot listen for SMTP on {host}:{port} (relay.smtp_listen): "
                          f"{exc.strerror}; choose an address this machine has and a port this "
                          f"user may bind (port 25: see docs/ADMIN.md)") from exc
    bound = server.sockets[0].getsockname()[1]
    log.info("relay SMTP intake listening on %s:%d", host, bound)
    return server


def smtp_port(server: asyncio.Server) -> int:
    """The port *server* listens on (``relay.smtp_listen`` may say 0, for tests)."""
    port: Any = server.sockets[0].getsockname()[1]
    return int(port)
