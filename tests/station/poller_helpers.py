"""Shared pieces of the poller tests: messages, settings, seeding, ledger snapshots."""

from __future__ import annotations

import itertools
import os
import pwd
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mailbridge.config import (
    BUILTIN_CATEGORIES,
    ImapSettings,
    LedgerSettings,
    RelaySettings,
    Secret,
    Settings,
    Station,
)
from mailbridge.core.message import Envelope, RelayIdentity, Submission, compose, signing_key
from mailbridge.station.ledger.db import make_engine, session_factory, upgrade
from mailbridge.station.ledger.models import Location, Message, Tip
from mailbridge.station.ledger.store import LedgerStore
from mailbridge.station.poller.imap import ImapConnection
from mailbridge.station.poller.sync import ImapPoller
from mailbridge.station.records import Counts
from tests.servers.mailstack import MailStack

RELAY = "tips@relay.example.test"
RELAY_DOMAIN = "relay.example.test"
PASSWORD = "secret"
RELAY_SECRET = "s" * 40  # settings()' relay secret: its key signs tip()
RELAY_KEY = signing_key(RELAY_SECRET)
RELAY_ID = RelayIdentity(RELAY, (bytes(RELAY_KEY.verify_key),))
_numbers = itertools.count(1)


def tip(ref: str, text: str = "Có người vượt biên ở chợ phiên.", *,
        references: tuple[str, ...] = (), category: str = "border",
        station: str = "ncs", message_id: str = "", likely_spam: str = "") -> bytes:
    """A forwarded tip exactly as the relay builds and signs it."""
    sub = Submission(station_id=station, station_name="Đồn Biên phòng", mailbox="x@example.test",
                     ref=ref, category_id=category, category_label="Vượt biên", text=text,
                     placement_id="cho-phien", placement_label="Chợ phiên",
                     received_hour=datetime(2026, 11, 2, 9, tzinfo=UTC),
                     likely_spam=likely_spam)
    env = Envelope(RELAY, RELAY_DOMAIN, "a" * 32, message_id=message_id, references=references)
    return compose(sub, env, RELAY_KEY).data


def plain(subject: str, body: str = "hello\n", *, sender: str = "someone@example.org",
          headers: dict[str, str] | None = None, message_id: str | None = "") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "station@example.test"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 02 Nov 2026 09:15:00 +0700"
    if message_id is not None:
        msg["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@example.org>"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return bytes(msg)


def new_ref() -> str:
    return f"NCS-{next(_numbers):04d}"


def new_user(stack: MailStack) -> str:
    address = f"p{uuid.uuid4().hex[:10]}@example.test"
    stack.add_user(address, PASSWORD)
    with stack.imap_client(address, PASSWORD) as client:  # creates the Maildir
        client.select_folder("INBOX")
    return address


def append(stack: MailStack, address: str, raws: Iterable[bytes], folder: str = "INBOX",
           flags: tuple[str, ...] = ()) -> None:
    with stack.imap_client(address, PASSWORD) as client:
        if not client.folder_exists(folder):
            client.create_folder(folder)
        for raw in raws:
            client.append(folder, raw, flags=flags)


def seed_maildir(stack: MailStack, address: str, raws: Iterable[bytes]) -> int:
    """Write messages straight into the Maildir's cur/ (fast: no SMTP, no IMAP)."""
    cur = stack.maildir(address) / "cur"
    vmail = pwd.getpwnam("vmail")
    count = 0
    for i, raw in enumerate(raws):
        path = cur / f"{1_700_000_000 + i}.M{i}P1.seed{uuid.uuid4().hex[:6]}:2,"
        path.write_bytes(raw.replace(b"\r\n", b"\n"))
        os.chown(path, vmail.pw_uid, vmail.pw_gid)
        count += 1
    return count


def imap_settings(stack: MailStack, address: str, *, folders: tuple[str, ...] = ("INBOX",),
                  port: int | None = None, timeout: float = 10.0) -> ImapSettings:
    return ImapSettings(host=stack.host, port=port or stack.imap_port, tls="none",
                        username=address, password=Secret(PASSWORD), folders=folders,
                        timeout=timeout)


def settings(ledger_url: str, attachments: Path, stations: dict[str, Station]) -> Settings:
    relay = RelaySettings(address=RELAY, domain=RELAY_DOMAIN, database="sqlite://",
                          secret=Secret(RELAY_SECRET))
    return Settings(path=attachments / "mailbridge.toml", relay=relay,
                    ledger=LedgerSettings(database=ledger_url, attachments_dir=attachments,
                                          max_message_bytes=2 * 1024 * 1024),
                    stations=stations, categories=BUILTIN_CATEGORIES)


class Ledger:
    """A migrated ledger plus pollers bound to it, for one test."""

    def __init__(self, url: str, attachments: Path, address: str) -> None:
        upgrade(url)
        self.url = url
        self.engine = make_engine(url)
        self.sessions = session_factory(self.engine)
        self.store = LedgerStore(self.sessions, "ncs", address, attachments)

    def poller(self, imap: ImapSettings, *, max_bytes: int = 2 * 1024 * 1024) -> ImapPoller:
        return ImapPoller(ImapConnection(imap), self.store, relay=RELAY_ID,
                          max_message_bytes=max_bytes)

    def poll(self, imap: ImapSettings, **kwargs: Any) -> Any:
        p = self.poller(imap, **kwargs)
        try:
            return p.poll()
        finally:
            p.conn.close()

    def upgrade_from(self, revision: str) -> None:
        """Take the ledger back to the schema of *revision* with its data, then upgrade
        it as `mailbridge db upgrade` does: what a migration fills in for old rows."""
        from alembic import command

        from mailbridge.station.ledger.db import alembic_config

        self.engine.dispose()
        engine = make_engine(self.url, create=True)
        with engine.begin() as conn:
            cfg = alembic_config(self.url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
        engine.dispose()
        upgrade(self.url)

    def count(self, model: Any, *where: Any) -> int:
        with self.sessions() as s:
            return len(s.scalars(select(model).where(*where)).all())

    def snapshot(self) -> dict[str, Any]:
        """The ledger's meaning, free of row ids and times: compare two indexings."""
        with self.sessions() as s:
            message_id = {m.id: m.message_id for m in s.scalars(select(Message))}
            tips = {t.ref: (message_id[t.message_pk] if t.message_pk else "",
                            t.category, t.placement, t.status)
                    for t in s.scalars(select(Tip))}
            ref_of = {t.id: t.ref for t in s.scalars(select(Tip))}
            messages = {m.message_id: (m.kind, ref_of.get(m.tip_id or 0, ""), m.raw_sha256)
                        for m in s.scalars(select(Message))}
            live = sorted((loc.folder, message_id[loc.message_pk], loc.flags)
                          for loc in s.scalars(select(Location).where(Location.gone.is_(False))))
        return {"tips": tips, "messages": messages, "live": live}

    def close(self) -> None:
        self.engine.dispose()


def run_in_thread(poller: ImapPoller, reports: list[Counts], stop: threading.Event,
                  **kwargs: float) -> threading.Thread:
    """``poller.run_forever`` in a daemon thread, reporting into *reports* until *stop*."""
    thread = threading.Thread(target=poller.run_forever, daemon=True, kwargs={
        "stop": stop.is_set, "report": reports.append, **kwargs})
    thread.start()
    return thread
