"""The poller's writes to the ledger: one transaction per batch, cursor included.

Every method opens and commits its own transaction, so a crash at any point
leaves either the whole batch (rows + advanced cursor) or none of it. Rows are
keyed by UNIQUE constraints as well, so re-indexing a batch is a no-op.

Threading is order-independent: whichever message of a thread is indexed
first, the links end up the same (a tip is keyed by its public ref; a reply
indexed before its tip is linked when the tip arrives, via ``message_refs``).
The poller only creates tips; it never touches workflow columns afterwards.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ...errors import LedgerError
from ..poller.index import Indexed
from .models import (
    Attachment,
    FolderState,
    Location,
    MailEvent,
    Message,
    MessageKind,
    MessageRef,
    Quarantine,
    Status,
    Tip,
    utcnow,
)

log = logging.getLogger(__name__)
IN_CHUNK = 500  # bound IN (...) lists: SQLite's variable limit, PostgreSQL plan size
LINKABLE = (MessageKind.OTHER.value, MessageKind.TIP.value, MessageKind.FOLLOWUP.value,
            MessageKind.REPLY.value)
T = TypeVar("T")


@dataclass(frozen=True)
class Fetched:
    """One message seen at (folder, UIDVALIDITY, UID); ``indexed`` None = known content."""

    uid: int
    flags: tuple[str, ...]
    message_id: str
    indexed: Indexed | None = None
    raw: bytes | None = None  # kept only when ``indexed.problems`` (quarantine)
    modseq: int = 0


@dataclass(frozen=True)
class Cursor:
    uidvalidity: int = 0
    last_uid: int = 0
    highestmodseq: int = 0
    uidnext: int = 0
    message_count: int = 0


@dataclass
class Counts:
    """What one poll changed; printed as the one-line summary (counts only)."""

    new: int = 0
    tips: int = 0
    followups: int = 0
    replies: int = 0
    other: int = 0
    auto: int = 0
    placeholders: int = 0
    quarantined: int = 0
    flags: int = 0
    gone: int = 0
    rebound: int = 0

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def changed(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def line(self) -> str:
        return ", ".join(f"{getattr(self, f.name)} {f.name}" for f in fields(self)
                         if getattr(self, f.name)) or "no changes"


def flag_text(flags: Iterable[str]) -> str:
    """Flags as stored: sorted, space-separated, without the session-only \\Recent."""
    return " ".join(sorted({f for f in flags if f and f.lower() != "\\recent"}))


def flag_diff(old: str, new: str) -> str:
    before, after = set(old.split()), set(new.split())
    return " ".join([f"+{f}" for f in sorted(after - before)]
                    + [f"-{f}" for f in sorted(before - after)])


def _chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class LedgerStore:
    """All ledger writes of one station's poller."""

    def __init__(self, sessions: sessionmaker[Session], station_id: str, mailbox: str,
                 attachments_dir: Path) -> None:
        self.sessions = sessions
        self.station = station_id
        self.mailbox = mailbox.strip().lower()
        self.attachments_dir = attachments_dir

    # -- reads ----------------------------------------------------------------------

    def cursor(self, folder: str) -> Cursor:
        try:
            with self.sessions() as s:
                st = s.get(FolderState, (self.station, folder))
                if st is None:
                    return Cursor()
                return Cursor(st.uidvalidity, st.last_uid, st.highestmodseq, st.uidnext,
                              st.message_count)
        except SQLAlchemyError as exc:
            raise _ledger_error(exc) from exc

    def live_flags(self, folder: str, uidvalidity: int) -> dict[int, str]:
        """UID -> flags of every message the ledger believes is in the folder."""
        try:
            with self.sessions() as s:
                rows = s.execute(select(Location.uid, Location.flags).where(
                    Location.station_id == self.station, Location.folder == folder,
                    Location.uidvalidity == uidvalidity, Location.gone.is_(False)))
                return {uid: flags for uid, flags in rows}
        except SQLAlchemyError as exc:
            raise _ledger_error(exc) from exc

    def live_count(self, folder: str, uidvalidity: int) -> int:
        """How many messages the ledger believes are in the folder (one COUNT query)."""
        try:
            with self.sessions() as s:
                return int(s.scalar(select(func.count()).select_from(Location).where(
                    Location.station_id == self.station, Location.folder == folder,
                    Location.uidvalidity == uidvalidity, Location.gone.is_(False))) or 0)
        except SQLAlchemyError as exc:
            raise _ledger_error(exc) from exc

    def known_ids(self, message_ids: Sequence[str]) -> set[str]:
        """Which of these Message-IDs the ledger already holds (content identity)."""
        found: set[str] = set()
        try:
            with self.sessions() as s:
                for part in _chunks(list(set(message_ids))):
                    found.update(s.scalars(select(Message.message_id).where(
                        Message.station_id == self.station, Message.message_id.in_(part))))
        except SQLAlchemyError as exc:
            raise _ledger_error(exc) from exc
        return found

    # -- writes (each one transaction) ---------------------------------------------

    def add_batch(self, folder: str, uidvalidity: int, items: Sequence[Fetched],
                  last_uid: int, *, rebinding: bool = False) -> Counts:
        """Index a batch and advance the folder's cursor to *last_uid*, atomically."""
        counts = Counts()
        try:
            with self.sessions.begin() as s:
                _Batch(self, s, folder, uidvalidity, counts, rebinding).run(items)
                st = self._state(s, folder)
                st.uidvalidity = uidvalidity
                st.last_uid = max(st.last_uid, last_uid)
                st.updated_at = utcnow()
        except SQLAlchemyError as exc:
            raise _ledger_error(exc) from exc
        return counts

    def set_flags(self, folder: str, uidvalidity: int,
                  changes: Mapping[int, tuple[str, ...]]) -> Counts:
        """Record flag changes made elsewhere as events; \\Seen is read, never written."""
        counts = Counts()
        try:
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
        except SQLAlchemyError as exc:
            raise _ledger_error(exc) from exc
        return counts

    def mark_gone(self, folder: str, uidvalidity: int, uids: Iterable[int]) -> Counts:
        """Tombstone locations that left the folder (moved or deleted); rows stay."""
        counts = Counts()
        try:
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
        except SQLAlchemyError as exc:
            raise _ledger_error(exc) from exc
        return counts

    def start_rebind(self, folder: str, old: int, new: int) -> None:
        """UIDVALIDITY changed: retire the old UIDs; content identity re-binds them."""
        try:
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
        except SQLAlchemyError as exc:
            raise _ledger_error(exc) from exc

    def finish(self, folder: str, cursor: Cursor) -> None:
        """Remember what the folder looked like when it was last fully in sync."""
        try:
            with self.sessions.begin() as s:
                st = self._state(s, folder)
                st.uidvalidity = cursor.uidvalidity
                st.last_uid = max(st.last_uid, cursor.last_uid)
                st.highestmodseq = cursor.highestmodseq
                st.uidnext, st.message_count = cursor.uidnext, cursor.message_count
                st.updated_at = utcnow()
        except SQLAlchemyError as exc:
            raise _ledger_error(exc) from exc

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
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        return rel


class _Batch:
    """The linking logic of one ``add_batch`` call, inside its transaction."""

    def __init__(self, store: LedgerStore, s: Session, folder: str, uidvalidity: int,
                 counts: Counts, rebinding: bool) -> None:
        self.store, self.s, self.folder, self.uidvalidity = store, s, folder, uidvalidity
        self.station = store.station
        self.counts, self.rebinding = counts, rebinding
        self.indexed: dict[int, Indexed] = {}  # id(Message) -> what the parser found

    def run(self, items: Sequence[Fetched]) -> None:
        s = self.s
        uids = [f.uid for f in items]
        present: set[int] = set()
        for part in _chunks(uids):
            present.update(s.scalars(select(Location.uid).where(
                Location.station_id == self.station, Location.folder == self.folder,
                Location.uidvalidity == self.uidvalidity, Location.uid.in_(part))))
        todo = [f for f in items if f.uid not in present]
        messages = self._messages([f.message_id for f in todo])
        fresh: list[tuple[Message, Fetched]] = []
        for f in todo:
            if f.message_id in messages or f.indexed is None:
                continue
            msg = self._new_message(f.indexed)
            self.indexed[id(msg)] = f.indexed
            messages[f.message_id] = msg
            fresh.append((msg, f))
        s.flush()
        refs: list[dict[str, object]] = []
        for msg, f in fresh:
            refs.extend({"message_pk": msg.id, "target": t}
                        for t in (f.indexed.references if f.indexed else ()))
            self._extras(msg, f)
        if refs:  # bulk (executemany): rows the ORM need not track
            s.execute(insert(MessageRef), refs)
        self._link([msg for msg, _f in fresh], messages)
        self._locations(todo, messages, {id(m) for m, _f in fresh})

    def _messages(self, ids: Sequence[str]) -> dict[str, Message]:
        found: dict[str, Message] = {}
        for part in _chunks(list(set(ids))):
            for m in self.s.scalars(select(Message).where(
                    Message.station_id == self.station, Message.message_id.in_(part))):
                found[m.message_id] = m
        return found

    def _new_message(self, ind: Indexed) -> Message:
        msg = Message(
            station_id=self.station, message_id=ind.message_id, raw_sha256=ind.raw_sha256,
            size=ind.size, kind=ind.kind.value, subject=ind.subject, text_body=ind.text_body,
            sender=ind.sender, received_hour=ind.received_hour, in_reply_to=ind.in_reply_to,
            references=" ".join(ind.references), ref=ind.ref, warning=ind.warning,
            tip_id=None, indexed_at=utcnow())
        self.s.add(msg)
        self.counts.new += 1
        return msg

    def _extras(self, msg: Message, f: Fetched) -> None:
        ind = f.indexed
        assert ind is not None
        keep_files = ind.is_relay
        for part in ind.attachments:
            digest = part.sha256
            stored = self.store.store_attachment(part.data, digest) if keep_files else ""
            self.s.add(Attachment(message_pk=msg.id, filename=part.filename,
                                  content_type=part.content_type, size=len(part.data),
                                  sha256=digest, stored_path=stored))
        if ind.problems or ind.kind == MessageKind.QUARANTINED:
            self.s.add(Quarantine(station_id=self.station, message_pk=msg.id, folder=self.folder,
                                  uidvalidity=self.uidvalidity, uid=f.uid,
                                  reason="; ".join(ind.problems)[:2000], raw=f.raw or b""))
            self.counts.quarantined += 1
        if ind.kind == MessageKind.PLACEHOLDER:
            self.counts.placeholders += 1
        elif ind.kind == MessageKind.AUTO:
            self.counts.auto += 1

    # -- threading ---------------------------------------------------------------

    def _link(self, fresh: list[Message], messages: dict[str, Message]) -> None:
        """Link new messages to tips, then pull in earlier messages that name them.

        Batched: one query for referenced messages, one for tips by ref, one flush
        for all new tips, two for the backfill; never a query per message.
        """
        refs = {t for m in fresh for t in m.references.split()}
        known = self._messages(sorted(refs - set(messages)))
        known.update(messages)
        self.tips: dict[str, Tip] = {}
        self.refs_loaded = {m.ref for m in fresh if m.ref}
        for part in _chunks(sorted(self.refs_loaded)):
            self.tips.update({t.ref: t for t in self.s.scalars(select(Tip).where(
                Tip.station_id == self.station, Tip.ref.in_(part)))})
        self.tip_of: dict[str, Tip] = {}  # message_id -> tip, for links made in this batch
        for msg in fresh:
            self._link_one(msg, known)
        self.s.flush()  # new tips get their ids
        for msg in fresh:
            tip = self.tip_of.get(msg.message_id)
            if tip is not None:
                msg.tip_id = tip.id
        queue = [m for m in fresh if m.tip_id is not None]
        while queue:
            backfilled = self._backfill(queue, known)
            for msg in backfilled:
                self._link_one(msg, known)
                tip = self.tip_of.get(msg.message_id)
                if tip is not None:
                    msg.tip_id = tip.id
            queue = [m for m in backfilled if m.tip_id is not None]
        for msg in fresh:
            name = {MessageKind.TIP: "tips", MessageKind.FOLLOWUP: "followups",
                    MessageKind.REPLY: "replies", MessageKind.OTHER: "other"}.get(
                MessageKind(msg.kind))
            if name:
                setattr(self.counts, name, getattr(self.counts, name) + 1)

    def _tip_by_id(self, tip_id: int | None) -> Tip | None:
        return self.s.get(Tip, tip_id) if tip_id is not None else None

    def _tip_by_refs(self, msg: Message, known: dict[str, Message]) -> Tip | None:
        for target in reversed(msg.references.split()):
            if target in self.tip_of:
                return self.tip_of[target]
            if target in known and known[target].tip_id is not None:
                return self._tip_by_id(known[target].tip_id)
        return None

    def _link_one(self, msg: Message, known: dict[str, Message]) -> None:
        if msg.tip_id is not None or msg.kind not in LINKABLE:
            return
        tip = self._tip_by_refs(msg, known)
        if msg.kind in (MessageKind.TIP, MessageKind.FOLLOWUP):
            tip = tip or self.tips.get(msg.ref) or self._tip_by_ref(msg.ref)
            if tip is None:
                tip = self._new_tip(msg)
            elif msg.kind == MessageKind.TIP and tip.message_pk != msg.id:
                first = self.s.get(Message, tip.message_pk) if tip.message_pk else None
                if first is None or first.kind != MessageKind.TIP:
                    # The original arrived after a follow-up: it becomes the tip's message.
                    tip.message_pk, tip.subject = msg.id, msg.subject
                    tip.preview = self._preview(msg)
                    tip.received_hour = msg.received_hour or tip.received_hour
            self.tip_of[msg.message_id] = tip
            return
        if tip is None and msg.ref:
            if msg.sender != self.store.mailbox:
                msg.warning = (f"subject names {msg.ref} but the sender is not the station "
                               f"mailbox: not linked")
                return
            tip = self.tips.get(msg.ref) or self._tip_by_ref(msg.ref)
        if tip is not None:
            msg.kind = MessageKind.REPLY.value
            self.tip_of[msg.message_id] = tip

    def _tip_by_ref(self, ref: str) -> Tip | None:
        if not ref or ref in self.tips or ref in self.refs_loaded:
            return self.tips.get(ref)
        tip = self.s.scalar(select(Tip).where(Tip.station_id == self.station, Tip.ref == ref))
        self.refs_loaded.add(ref)
        if tip is not None:
            self.tips[ref] = tip
        return tip

    def _new_tip(self, msg: Message) -> Tip:
        hour = msg.received_hour or utcnow().replace(minute=0, second=0, microsecond=0)
        ind = self.indexed.get(id(msg))
        category = ind.category if ind else "other"
        if ind and ind.contract_station and ind.contract_station != self.station:
            msg.warning = f"addressed to station {ind.contract_station}, found in {self.station}"
        tip = Tip(station_id=self.station, ref=msg.ref, message_pk=msg.id,
                  received_category=category, category=category,
                  placement=ind.placement if ind else "",
                  received_hour=hour, subject=msg.subject, preview=self._preview(msg),
                  status=Status.NEW.value, status_reason="", assignee="", updated_at=utcnow())
        self.s.add(tip)
        self.tips[msg.ref] = tip
        return tip

    def _preview(self, msg: Message) -> str:
        ind = self.indexed.get(id(msg))
        return ind.preview if ind else msg.subject[:200]

    def _backfill(self, linked: list[Message], known: dict[str, Message]) -> list[Message]:
        """Earlier messages that reply to *linked* ones, or carry their tip's ref."""
        by_id = {m.message_id: m for m in linked}
        found: dict[int, Message] = {}
        with self.s.no_autoflush:
            for part in _chunks(sorted(by_id)):
                rows = self.s.scalars(select(Message).join(
                    MessageRef, MessageRef.message_pk == Message.id).where(
                    MessageRef.target.in_(part), Message.tip_id.is_(None),
                    Message.kind.in_(LINKABLE)))
                found.update({m.id: m for m in rows})
            refs = sorted({m.ref for m in linked if m.ref})
            for part in _chunks(refs):
                rows = self.s.scalars(select(Message).where(
                    Message.station_id == self.station, Message.ref.in_(part),
                    Message.tip_id.is_(None), Message.kind.in_(LINKABLE)))
                found.update({m.id: m for m in rows})
        for m in found.values():
            known[m.message_id] = m
        return [m for m in found.values() if m.message_id not in self.tip_of]

    # -- locations ---------------------------------------------------------------

    def _locations(self, todo: Sequence[Fetched], messages: dict[str, Message],
                   fresh: set[int]) -> None:
        s = self.s
        pks = sorted({messages[f.message_id].id for f in todo if f.message_id in messages})
        where: dict[int, list[tuple[str, bool]]] = {}
        for part in _chunks(pks):
            for pk, folder, gone in s.execute(select(
                    Location.message_pk, Location.folder, Location.gone).where(
                    Location.message_pk.in_(part))):
                where.setdefault(pk, []).append((folder, gone))
        locations: list[dict[str, object]] = []
        events: list[dict[str, object]] = []
        for f in todo:
            msg = messages.get(f.message_id)
            if msg is None:
                continue
            seen = where.setdefault(msg.id, [])
            if id(msg) not in fresh and not self.rebinding:
                live = [fo for fo, gone in seen if not gone]
                if live:
                    kind, detail = "copied", f"also in {live[0]}"
                else:
                    kind, detail = "moved", f"from {seen[-1][0]}" if seen else ""
                events.append({"message_pk": msg.id, "kind": kind, "detail": detail})
            elif id(msg) not in fresh:
                self.counts.rebound += 1
            elif seen:
                events.append({"message_pk": msg.id, "kind": "copied",
                               "detail": f"also in {seen[0][0]}"})
            locations.append({"message_pk": msg.id, "station_id": self.station,
                              "folder": self.folder, "uidvalidity": self.uidvalidity,
                              "uid": f.uid, "flags": flag_text(f.flags), "modseq": f.modseq,
                              "gone": False, "gone_at": None})
            seen.append((self.folder, False))
        s.flush()
        if locations:
            s.execute(insert(Location), locations)
        now = utcnow()
        if events:
            s.execute(insert(MailEvent), [{**e, "station_id": self.station, "folder": self.folder,
                                           "at": now} for e in events])


def _ledger_error(exc: SQLAlchemyError) -> LedgerError:
    return LedgerError(f"writing the ledger failed: {exc}; check ledger.database "
                       f"(disk space, permissions, server reachable) and retry")
