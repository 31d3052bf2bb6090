"""What the ledger stops keeping (``mailbridge purge`` on the station side).

- quarantined raw mail after ``ledger.quarantine_days`` (90): the bytes of messages
  that could not be parsed, kept only so an admin can see why;
- attachment files after ``ledger.attachment_days`` (0: forever): the file goes,
  overwritten first; its name, size and SHA-256 stay, so the case file still proves
  what was received;
- the officers' audit trail after ``ledger.audit_days`` (0: forever). It is the
  record of who did what to a tip: never set it shorter than the law asks.

Tips, their thread and notes are the station's record and are never purged here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from ..config import LedgerSettings
from ..errors import LedgerError
from ..scrub import compact, secure_delete
from .ledger.db import make_engine, session_factory, translated
from .ledger.models import Attachment, Audit, Message, Quarantine, utcnow

PURGING = "purging the ledger"


@dataclass(frozen=True)
class LedgerExpired:
    quarantined: int
    attachments: int  # rows whose file goes
    audit_rows: int

    @property
    def total(self) -> int:
        return self.quarantined + self.attachments + self.audit_rows


def _before(days: int, now: datetime) -> datetime | None:
    return now - timedelta(days=days) if days > 0 else None


@translated(PURGING)
def purge_ledger(ledger: LedgerSettings, *, dry_run: bool = False,
                 now: datetime | None = None) -> LedgerExpired:
    """Delete what is past its retention (or, with *dry_run*, count it); on SQLite the
    file is then vacuumed and its WAL truncated so the bytes leave the disk."""
    now = now or utcnow()
    engine = make_engine(ledger.database)
    try:
        with session_factory(engine)() as s:
            secure_delete(s.connection())
            expired, files = _purge(s, ledger, now)
            if dry_run:
                s.rollback()
                return expired
            s.commit()
        for path in files:
            _shred(ledger.attachments_dir / path)
        if expired.total and not compact(engine, ("quarantine", "audit", "attachments")):
            raise LedgerError("the ledger's WAL could not be truncated: a reader held it; "
                              "run `mailbridge purge` again in a moment")
        return expired
    finally:
        engine.dispose()


def _purge(s: Session, ledger: LedgerSettings, now: datetime) -> tuple[LedgerExpired, list[str]]:
    """Delete in the session (the caller commits or rolls back); returns the counts and
    the attachment files no remaining row points at (one file serves every copy)."""
    quarantined = attachments = audits = 0
    files: list[str] = []
    if (cut := _before(ledger.quarantine_days, now)) is not None:
        quarantined = _delete(s, Quarantine, Quarantine.at <= cut)
    if (cut := _before(ledger.attachment_days, now)) is not None:
        old = select(Message.id).where(
            func.coalesce(Message.received_hour, Message.indexed_at) <= cut)
        where = (Attachment.message_pk.in_(old), Attachment.stored_path != "")
        paths = set(s.scalars(select(Attachment.stored_path).where(*where)))
        attachments = _rowcount(s.execute(update(Attachment).where(*where)
                                          .values(stored_path="")))
        still = set(s.scalars(select(Attachment.stored_path)
                              .where(Attachment.stored_path.in_(paths))))
        files = sorted(paths - still)
    if (cut := _before(ledger.audit_days, now)) is not None:
        audits = _delete(s, Audit, Audit.at <= cut)
    return LedgerExpired(quarantined, attachments, audits), files


def _delete(s: Session, model: type[Quarantine] | type[Audit], where: Any) -> int:
    return _rowcount(s.execute(delete(model).where(where)))


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def _shred(path: Path) -> None:
    """Overwrite, then unlink: on a plain file system the content does not stay behind
    (copy-on-write file systems and SSDs may keep old blocks: encrypt the disk)."""
    try:
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.write(b"\0" * size)
            fh.flush()
            os.fsync(fh.fileno())
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LedgerError(f"cannot remove the attachment {path}: {exc.strerror}; check "
                          f"ledger.attachments_dir permissions") from exc
