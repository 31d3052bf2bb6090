"""The poller's writes to the ledger: one transaction per batch, cursor included.

Every method opens and commits its own transaction, so a crash at any point
leaves either the whole batch (rows + advanced cursor) or none of it. Rows are
keyed by UNIQUE constraints as well, so re-indexing a batch is a no-op.

Threading is order-independent: whichever message of a thread is indexed
first, the links end up the same (a tip is keyed by its public ref; a reply
indexed before its tip is linked when the tip arrives, via ``message_refs``).
The batch itself (rows, links, locations) is written by ``linking.Batch``.
The poller only creates tips; it never touches workflow columns afterwards.
Database errors leave as one ``LedgerError`` line (``db.translated``); attachment
files are written 0600 in 0700 folders, whatever the umask.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from ...errors import LedgerError
from ...fsmodes import private_dir
from ..records import Counts, Cursor, Fetched
from .db import translated
from .linking import Batch
from .linking import chunks as _chunks
from .linking import flag_text as flag_text
from .models import (
    FolderState,
    Location,
    MailEvent,
    Message,
    utcnow,
)

log = logging.getLogger(__name__)
READING = "reading the ledger"
WRITING = "writing the ledger"


def flag_diff(old: str, new: str) -> str:
    before, after = set(old.split()), set(new.split())
    return " ".join([f"+{f}" for f in sorted(after - before)]
                    + [f"-{f}" for f in sorted(before - after)])


class LedgerStore:
    """All ledger writes of one station's poller."""

    def __init__(self, sessions: sessionmaker[Session], station_id: str, mailbox: str,
                 attachments_dir: Path) -> None:
        self.sessions = sessions
        self.station = station_id
        self.mailbox = mailbox.strip().lower()
        self.attachments_dir = attachments_dir

    # -- reads ----------------------------------------------------------------------

    @translated(READING)
    def cursor(self, folder: str) -> Cursor:
        with self.sessions() as s:
            st = s.get(FolderState, (self.station, folder))
            if st is None:
                return Cursor()
            return Cursor(st.uidvalidity, st.last_uid, st.highestmodseq, st.uidnext,
                          st.message_count)

    @translated(READING)
    def live_flags(self, folder: str, uidvalidity: int) -> dict[int, str]:
        """UID -> flags of every message the ledger believes is in the folder."""
        with self.sessions() as s:
            rows = s.execute(select(Location.uid, Location.flags).where(
                Location.station_id == self.station, Location.folder == folder,
                Location.uidvalidity == uidvalidity, Location.gone.is_(False)))
            return {uid: flags for uid, flags in rows}

    @translated(READING)
    def live_count(self, folder: str, uidvalidity: int) -> int:
        """How many messages the ledger believes are in the folder (one COUNT query)."""
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(Location).where(
                Location.station_id == self.station, Location.folder == folder,
                Location.uidvalidity == uidvalidity, Location.gone.is_(False))) or 0)

    @translated(READING)
    def known_ids(self, message_ids: Sequence[str]) -> set[str]:
        """Which of these Message-IDs the ledger already holds (content identity)."""
        found: set[str] = set()
        with self.sessions() as s:
            for part in _chunks(list(set(message_ids))):
                found.update(s.scalars(select(Message.message_id).where(
                    Message.station_id == self.station, Message.message_id.in_(part))))
        return found

    # -- writes (each one transaction) ---------------------------------------------

    @translated(WRITING)
    def add_batch(self, folder: str, uidvalidity: int, items: Sequence[Fetched],
                  last_uid: int, *, rebinding: bool = False) -> Counts:
        """Index a batch and advance the folder's cursor to *last_uid*, atomically."""
        counts = Counts()
        with self.sessions.begin() as s:
            Batch(self, s, folder, uidvalidity, counts, rebinding).run(items)
            st = self._state(s, folder)
            st.uidvalidity = uidvalidity
            st.last_uid = max(st.last_uid, last_uid)
            st.updated_at = utcnow()
        return counts

    @translated(WRITING)
    def set_flags(self, folder: str, uidvalidity: int,
                  changes: Mapping[int, tuple[str, ...]]) -> Counts:
        """Record flag changes made elsewhere as events; \\Seen is read, never written."""
        counts = Counts()
        with self.sessions.begin() as s:
            uids = sorted(changes)
            for part in _chunks(uids):
                for loc in s.scalars(select(Location).where(
                        Location.station_id == self.station, Location.folder == folder,
                        Location.uidvalidity == uidvalidity, Location.uid.in_(part),
                        Location.gone.is_(False))):
                    new = flag_text(changes[loc.uid])
                    if new == loc.flags:
                        continue
                    s.add(MailEvent(station_id=self.station, message_pk=loc.message_pk,
                                    kind="flags", folder=folder,
                                    detail=flag_diff(loc.flags, new)))
                    loc.flags = new
                    counts.flags += 1
        return counts

    @translated(WRITING)
    def mark_gone(self, folder: str, uidvalidity: int, uids: Iterable[int]) -> Counts:
        """Tombstone locations that left the folder (moved or deleted); rows stay."""
        counts = Counts()
        with self.sessions.begin() as s:
            for part in _chunks(sorted(set(uids))):
                for loc in s.scalars(select(Location).where(
                        Location.station_id == self.station, Location.folder == folder,
                        Location.uidvalidity == uidvalidity, Location.uid.in_(part),
                        Location.gone.is_(False))):
                    loc.gone, loc.gone_at = True, utcnow()
                    s.add(MailEvent(station_id=self.station, message_pk=loc.message_pk,
                                    kind="deleted", folder=folder, detail="expunged"))
                    counts.gone += 1
        return counts

    @translated(WRITING)
    def start_rebind(self, folder: str, old: int, new: int) -> None:
        """UIDVALIDITY changed: retire the old UIDs; content identity re-binds them."""
        with self.sessions.begin() as s:
            s.execute(update(Location).where(
                Location.station_id == self.station, Location.folder == folder,
                Location.uidvalidity != new, Location.gone.is_(False),
            ).values(gone=True, gone_at=utcnow()))
            s.add(MailEvent(station_id=self.station, kind="rebound", folder=folder,
                            detail=f"uidvalidity {old} -> {new}"))
            st = self._state(s, folder)
            st.uidvalidity, st.last_uid, st.highestmodseq = new, 0, 0
            st.uidnext = st.message_count = 0

    @translated(WRITING)
    def finish(self, folder: str, cursor: Cursor) -> None:
        """Remember what the folder looked like when it was last fully in sync."""
        with self.sessions.begin() as s:
            st = self._state(s, folder)
            st.uidvalidity = cursor.uidvalidity
            st.last_uid = max(st.last_uid, cursor.last_uid)
            st.highestmodseq = cursor.highestmodseq
            st.uidnext, st.message_count = cursor.uidnext, cursor.message_count
            st.updated_at = utcnow()

    def _state(self, s: Session, folder: str) -> FolderState:
        st = s.get(FolderState, (self.station, folder))
        if st is None:
            st = FolderState(station_id=self.station, folder=folder, uidvalidity=0, last_uid=0,
                             highestmodseq=0, uidnext=0, message_count=0)
            s.add(st)
        return st

    def store_attachment(self, data: bytes, sha256: str) -> str:
        """Write content-addressed (sha256) and return the path relative to the store."""
        rel = f"{sha256[:2]}/{sha256}"
        path = self.attachments_dir / rel
        if path.exists():
            return rel
        try:
            private_dir(path.parent)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # 0600
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise LedgerError(f"cannot write the attachment {path}: {exc.strerror}; check "
                              f"ledger.attachments_dir (disk space, permissions)") from exc
        return rel

