"""Shared test helpers, and a relay stand-in for the kill -9 test.

Run as ``python -m tests.relay.outbox_driver DB_URL MAILDIR COUNT``: it accepts
COUNT submissions while a DeliveryWorker delivers them into MAILDIR, and prints
each reference only after ``accept()`` returned (the moment a real relay shows
the receipt). The test kills it at a random moment and checks that nothing
printed was lost and nothing was delivered twice.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

from mailbridge.config import (
    BUILTIN_CATEGORIES,
    LedgerSettings,
    RelaySettings,
    Secret,
    Settings,
    SmtpSettings,
    Station,
    TlsMode,
)
from mailbridge.core.message import HEADER_REF, Composed, Envelope, Submission, compose, signing_key
from mailbridge.core.receipts import new_reply_token
from mailbridge.relay.outbox import DeliveryWorker
from mailbridge.relay.store import Accepted, RelayStore

RELAY_ADDRESS = "tips@relay.example.org"
RELAY_DOMAIN = "relay.example.org"
RELAY_KEY = signing_key("s" * 40)  # make_settings' secret


def make_settings(database: str, *stations: Station, retry_days: int = 5) -> Settings:
    relay = RelaySettings(address=RELAY_ADDRESS, domain=RELAY_DOMAIN, database=database,
                          secret=Secret("s" * 40), retry_days=retry_days)
    ledger = LedgerSettings(database="sqlite:///unused.db", attachments_dir=Path("unused"))
    return Settings(path=Path("mailbridge.toml"), relay=relay, ledger=ledger,
                    stations={s.id: s for s in stations}, categories=BUILTIN_CATEGORIES)


def smtp_station(sid: str, port: int, *, mailbox: str = "", tls: TlsMode = "none",
                 username: str = "", password: str = "", ca_file: Path | None = None,
                 timeout: float = 5.0) -> Station:
    smtp = SmtpSettings(host="127.0.0.1", port=port, tls=tls,
                        username=username, password=Secret(password), timeout=timeout,
                        ca_file=ca_file)
    return Station(id=sid, name=f"Station {sid}", ref_prefix=sid.upper(),
                   mailbox=mailbox or f"{sid}@station.example.test", smtp=smtp)


def maildir_station(sid: str, maildir: Path) -> Station:
    return Station(id=sid, name=f"Station {sid}", ref_prefix=sid.upper(),
                   mailbox=f"{sid}@station.example.test", maildir=maildir)


def builder(station: Station, text: str, token: str) -> Callable[[str, datetime], Composed]:
    def build(ref: str, date: datetime) -> Composed:
        sub = Submission(station_id=station.id, station_name=station.name,
                         mailbox=station.mailbox, ref=ref, category_id="drugs",
                         category_label="Drugs", text=text)
        return compose(sub, Envelope(RELAY_ADDRESS, RELAY_DOMAIN, token), RELAY_KEY, now=date)
    return build


def submit(store: RelayStore, station: Station, text: str, *, delay_minutes: int = 0,
           receipt_hash: str = "") -> Accepted:
    token = new_reply_token()
    return store.accept(station, builder(station, text, token),
                        receipt_hash=receipt_hash or secrets.token_hex(32),
                        reply_token=token, delay_minutes=delay_minutes)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def refs_in_maildir(root: Path) -> list[str]:
    """X-Mailbridge-Ref of every delivered file (new/ and cur/), one entry per file."""
    refs = []
    for sub in ("new", "cur"):
        folder = root / sub
        for path in sorted(folder.iterdir()) if folder.exists() else []:
            msg = message_from_bytes(path.read_bytes(), policy=default_policy)
            refs.append(str(msg[HEADER_REF]))
    return refs


async def _drive(url: str, maildir: Path, count: int) -> None:
    station = maildir_station("crash", maildir)
    store = RelayStore(url)
    store.upgrade()
    worker = DeliveryWorker(make_settings(url, station), store, max_idle=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for i in range(count):
        accepted = await asyncio.to_thread(submit, store, station, f"tip number {i}")
        print(accepted.ref, flush=True)
        worker.wake()
        await asyncio.sleep(0.002)  # submissions arrive over time, not in one burst
    while await asyncio.to_thread(store.pending_count):
        await asyncio.sleep(0.05)
    stop.set()
    await task
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(_drive(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])))
