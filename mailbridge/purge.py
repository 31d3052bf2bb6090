"""``mailbridge purge [--dry-run]``: delete what is past its retention, by role.

The relay also purges expired conversations and old outbox rows by itself once an
hour while it runs; this command does it on demand (and from the
``mailbridge-purge@.timer``), says what it removes, and vacuums the database so
the bytes leave the disk. The station side has no running process that does it:
the timer is its only purge. docs/ADMIN.md lists what is kept, where, how long.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import Settings
from .errors import StoreError


def run_purge(settings: Settings, *, dry_run: bool = False,
              out: Callable[[str], None] = print) -> int:
    if settings.role in ("relay", "all"):
        _purge_relay(settings, dry_run, out)
    if settings.role in ("station", "all"):
        _purge_station(settings, dry_run, out)
    return 0


def _verb(dry_run: bool) -> str:
    return "would delete" if dry_run else "deleted"


def _purge_relay(settings: Settings, dry_run: bool, out: Callable[[str], None]) -> None:
    from .relay.store import RelayStore

    relay = settings.relay
    store = RelayStore(relay.database, conversation_days=relay.conversation_days,
                       outbox_days=relay.outbox_days)
    try:
        expired = store.purge_expired(dry_run=dry_run)
        verb = _verb(dry_run)
        out(f"relay: {verb} {expired.conversations} tip record(s) with their conversation, "
            f"older than relay.conversation_days = {relay.conversation_days}")
        out(f"relay: {verb} {expired.outbox_rows} delivered or dropped outbox row(s), older "
            f"than relay.outbox_days = {relay.outbox_days}")
        dead = store.dead_count()
        if dead:
            out(f"relay: {dead} dead outbox row(s) still hold their tip's text: "
                f"`mailbridge outbox list`, then retry or drop each")
        if not dry_run:
            if not store.compact():
                raise StoreError("relay database: a reader held the WAL, so it could not be "
                                 "truncated: run `mailbridge purge` again in a moment")
            out("relay: database vacuumed" + (", WAL truncated" if store.is_sqlite else ""))
    finally:
        store.close()


def _purge_station(settings: Settings, dry_run: bool, out: Callable[[str], None]) -> None:
    from .station.retention import purge_ledger

    ledger = settings.ledger
    expired = purge_ledger(ledger, dry_run=dry_run)
    verb = _verb(dry_run)
    for what, key, days, count in (
            ("quarantined raw message(s)", "quarantine_days", ledger.quarantine_days,
             expired.quarantined),
            ("attachment file(s)", "attachment_days", ledger.attachment_days,
             expired.attachments),
            ("audit row(s)", "audit_days", ledger.audit_days, expired.audit_rows)):
        if days:
            out(f"station: {verb} {count} {what}, older than ledger.{key} = {days}")
        else:
            out(f"station: {what} kept forever (ledger.{key} = 0)")
    if not dry_run and expired.total:
        out("station: ledger vacuumed" + (", WAL truncated"
                                          if ledger.database.startswith("sqlite") else ""))
