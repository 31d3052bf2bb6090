"""One batch of indexed messages into the ledger: rows, threading, locations.

Runs inside ``LedgerStore.add_batch``'s transaction. Rows are written with
SQLAlchemy Core, a few statements per batch (``INSERT ... RETURNING`` for
messages and tips, ``executemany`` for the rest): the ORM cannot batch inserts
whose keys it needs back on SQLite and would send one statement per row.

Linking works on plain ``Row``/``TipRow`` records with an identity map by
primary key, so a message loaded twice (as a reference target, then by the
backfill) is one record, and every change to it is written once at the end.
Threading is order-independent: a reply indexed before its tip is linked when
the tip arrives (the backfill through ``message_refs`` and refs).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from ...core.receipts import ref_number
from ..records import Counts, Fetched, Indexed, MessageKind
from .models import (
    Base,
    Location,
    Message,
    MessageRef,
    Status,
    Tip,
    utcnow,
)

IN_CHUNK = 500  # bound IN (...) lists: SQLite's variable limit, PostgreSQL plan size
LINKABLE = (MessageKind.OTHER.value, MessageKind.TIP.value, MessageKind.FOLLOWUP.value,
            MessageKind.REPLY.value)
T = TypeVar("T")
_ROW_COLUMNS = (Message.id, Message.message_id, Message.kind, Message.ref, Message.references,
                Message.sender, Message.subject, Message.received_hour, Message.tip_id,
                Message.warning)
_TIP_COLUMNS = (Tip.id, Tip.ref, Tip.message_pk, Tip.subject, Tip.preview, Tip.received_hour)
_TABLES = Base.metadata.tables  # Core tables: no per-row ORM bookkeeping


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def flag_text(flags: Iterable[str]) -> str:
    """Flags as stored: sorted, space-separated, without the session-only \\Recent."""
    return " ".join(sorted({f for f in flags if f and f.lower() != "\\recent"}))


class Station(Protocol):
    """What a batch needs of its ``LedgerStore``; typed here so linking never imports
    the store, which imports linking."""

    station: str
    mailbox: str

    def store_attachment(self, data: bytes, sha256: str) -> str: ...


@dataclass(eq=False)
class Row:
    """What linking reads and changes of one message; ``saved`` is what the table holds."""

    id: int
    message_id: str
    kind: str
    ref: str
    references: str
    sender: str
    subject: str
    received_hour: datetime | None
    tip_id: int | None
    warning: str
    indexed: Indexed | None = None  # set for messages new in this batch

    def __post_init__(self) -> None:
        self.saved = self.state()

    def state(self) -> tuple[object, ...]:
        return self.tip_id, self.kind, self.warning


@dataclass(eq=False)
class TipRow:
    id: int | None  # None until inserted at the end of the linking pass
    ref: str
    message_pk: int | None
    subject: str
    preview: str
    received_hour: datetime
    fields: dict[str, Any] | None = None  # the full row of a tip new in this batch

    def __post_init__(self) -> None:
        self.saved = self.state()

    def state(self) -> tuple[object, ...]:
        return self.message_pk, self.subject, self.preview, self.received_hour


class Batch:
    """The rows and links of one ``add_batch`` call, inside its transaction."""

    def __init__(self, store: Station, s: Session, folder: str, uidvalidity: int,
                 counts: Counts, rebinding: bool) -> None:
        self.store, self.s, self.folder, self.uidvalidity = store, s, folder, uidvalidity
        self.station = store.station
        self.counts, self.rebinding = counts, rebinding
        self.rows: dict[int, Row] = {}      # identity map: message pk -> record
        self.tip_rows: dict[int, TipRow] = {}
        self.new_tips: list[TipRow] = []
        self.tips: dict[str, TipRow] = {}
        self.refs_loaded: set[str] = set()
        self.tip_of: dict[str, TipRow] = {}  # message_id -> tip, for links made in this batch

    def run(self, items: Sequence[Fetched]) -> None:
        s = self.s
        present: set[int] = set()
        for part in chunks([f.uid for f in items]):
            present.update(s.scalars(select(Location.uid).where(
                Location.station_id == self.station, Location.folder == self.folder,
                Location.uidvalidity == self.uidvalidity, Location.uid.in_(part))))
        todo = [f for f in items if f.uid not in present]
        messages = self._messages([f.message_id for f in todo])
        new: dict[str, Fetched] = {}
        for f in todo:
            if f.message_id not in messages and f.indexed is not None:
                new.setdefault(f.message_id, f)
        fresh = self._insert_messages(list(new.values()))
        messages.update({r.message_id: r for r in fresh})
        refs = [{"message_pk": r.id, "target": t}
                for r in fresh for t in (r.indexed.references if r.indexed else ())]
        if refs:
            s.execute(insert(_TABLES["message_refs"]), refs)
        self._extras([(r, new[r.message_id]) for r in fresh])
        self._link(fresh, messages)
        self._locations(todo, messages, {id(r) for r in fresh})
        self._write_changes()

    # -- rows ------------------------------------------------------------------------

    def _row(self, values: Sequence[Any]) -> Row:
        """The one record of a loaded message (a second load returns the first record)."""
        known = self.rows.get(values[0])
        if known is None:
            known = self.rows[values[0]] = Row(*values)
        return known

    def _load(self, *where: Any) -> list[Row]:
        return [self._row(r) for r in self.s.execute(select(*_ROW_COLUMNS).where(*where))]

    def _messages(self, ids: Sequence[str]) -> dict[str, Row]:
        found: dict[str, Row] = {}
        for part in chunks(sorted(set(ids))):
            for row in self._load(Message.station_id == self.station,
                                  Message.message_id.in_(part)):
                found[row.message_id] = row
        return found

    def _insert_messages(self, new: Sequence[Fetched]) -> list[Row]:
        if not new:
            return []
        now = utcnow()
        values = []
        for f in new:
            ind = f.indexed
            assert ind is not None
            values.append({
                "station_id": self.station, "message_id": ind.message_id,
                "raw_sha256": ind.raw_sha256, "size": ind.size, "kind": ind.kind.value,
                "subject": ind.subject, "text_body": ind.text_body, "sender": ind.sender,
                "search_text": ind.search_text,
                "received_hour": ind.received_hour, "in_reply_to": ind.in_reply_to,
                "references": " ".join(ind.references), "ref": ind.ref,
                "warning": ind.warning, "tip_id": None, "indexed_at": now})
        ids: dict[str, int] = {}
        table = _TABLES["messages"]
        for part in chunks(values):
            ids.update((mid, pk) for pk, mid in self.s.execute(
                insert(table).returning(table.c.id, table.c.message_id), part))
        fresh = []
        for v, f in zip(values, new, strict=True):
            row = Row(ids[str(v["message_id"])], str(v["message_id"]), str(v["kind"]),
                      str(v["ref"]), str(v["references"]), str(v["sender"]),
                      str(v["subject"]), f.indexed.received_hour if f.indexed else None,
                      None, str(v["warning"]), f.indexed)
            self.rows[row.id] = row
            fresh.append(row)
        self.counts.new += len(fresh)
        return fresh

    def _extras(self, fresh: Sequence[tuple[Row, Fetched]]) -> None:
        attachments: list[dict[str, Any]] = []
        quarantine: list[dict[str, Any]] = []
        now = utcnow()
        for row, f in fresh:
            ind = f.indexed
            assert ind is not None
            for part in ind.attachments:
                digest = part.sha256
                stored = self.store.store_attachment(part.data, digest) if ind.is_relay else ""
                attachments.append({"message_pk": row.id, "filename": part.filename,
                                    "content_type": part.content_type, "size": len(part.data),
                                    "sha256": digest, "stored_path": stored})
            if ind.problems or ind.kind == MessageKind.QUARANTINED:
                quarantine.append({"station_id": self.station, "message_pk": row.id,
                                   "folder": self.folder, "uidvalidity": self.uidvalidity,
                                   "uid": f.uid, "reason": "; ".join(ind.problems)[:2000],
                                   "raw": f.raw or b"", "at": now})
                self.counts.quarantined += 1
            if ind.kind == MessageKind.PLACEHOLDER:
                self.counts.placeholders += 1
            elif ind.kind == MessageKind.AUTO:
                self.counts.auto += 1
        if attachments:
            self.s.execute(insert(_TABLES["attachments"]), attachments)
        if quarantine:
            self.s.execute(insert(_TABLES["quarantine"]), quarantine)

    def _write_changes(self) -> None:
        """Every record whose link, kind or warning changed: one executemany each."""
        rows = [{"pk": r.id, "tip_id": r.tip_id, "kind": r.kind, "warning": r.warning}
                for r in self.rows.values() if r.state() != r.saved]
        if rows:
            self.s.execute(update(_TABLES["messages"]).where(Message.id == bindparam("pk")).values(
                tip_id=bindparam("tip_id"), kind=bindparam("kind"),
                warning=bindparam("warning")), rows)
        tips = [{"pk": t.id, "message_pk": t.message_pk, "subject": t.subject,
                 "preview": t.preview, "received_hour": t.received_hour}
                for t in self.tip_rows.values() if t.state() != t.saved]
        if tips:
            self.s.execute(update(_TABLES["tips"]).where(Tip.id == bindparam("pk")).values(
                message_pk=bindparam("message_pk"), subject=bindparam("subject"),
                preview=bindparam("preview"), received_hour=bindparam("received_hour")), tips)

    # -- threading -------------------------------------------------------------------

    def _link(self, fresh: list[Row], messages: dict[str, Row]) -> None:
        """Link new messages to tips, then pull in earlier messages that name them.

        Batched: one query for referenced messages, one for tips by ref, one insert
        for all new tips, two queries per backfill round; never a query per message.
        """
        refs = {t for m in fresh for t in m.references.split()}
        known = self._messages(sorted(refs - set(messages)))
        known.update(messages)
        self.refs_loaded = {m.ref for m in fresh if m.ref}
        for part in chunks(sorted(self.refs_loaded)):
            for tip in self._load_tips(Tip.station_id == self.station, Tip.ref.in_(part)):
                self.tips[tip.ref] = tip
        for msg in fresh:
            self._link_one(msg, known)
        self._assign_tips(fresh)
        queue = [m for m in fresh if m.tip_id is not None]
        while queue:
            backfilled = self._backfill(queue, known)
            for msg in backfilled:
                self._link_one(msg, known)
            self._assign_tips(backfilled)
            queue = [m for m in backfilled if m.tip_id is not None]
        for msg in fresh:
            name = {MessageKind.TIP: "tips", MessageKind.FOLLOWUP: "followups",
                    MessageKind.REPLY: "replies", MessageKind.OTHER: "other",
                    MessageKind.FORGED: "forged"}.get(
                MessageKind(msg.kind))
            if name:
                setattr(self.counts, name, getattr(self.counts, name) + 1)

    def _assign_tips(self, rows: list[Row]) -> None:
        """Insert the tips made for *rows*, then point each linked row at its tip."""
        self._insert_tips()
        for msg in rows:
            linked = self.tip_of.get(msg.message_id)
            if linked is not None:
                msg.tip_id = linked.id

    def _load_tips(self, *where: Any) -> list[TipRow]:
        found = []
        for values in self.s.execute(select(*_TIP_COLUMNS).where(*where)):
            if values[0] not in self.tip_rows:
                self.tip_rows[values[0]] = TipRow(*values)
            found.append(self.tip_rows[values[0]])
        return found

    def _tip_by_id(self, tip_id: int | None) -> TipRow | None:
        if tip_id is None:
            return None
        if tip_id in self.tip_rows:
            return self.tip_rows[tip_id]
        return next(iter(self._load_tips(Tip.id == tip_id)), None)

    def _tip_by_refs(self, msg: Row, known: dict[str, Row]) -> TipRow | None:
        for target in reversed(msg.references.split()):
            if target in self.tip_of:
                return self.tip_of[target]
            if target in known and known[target].tip_id is not None:
                return self._tip_by_id(known[target].tip_id)
        return None

    def _kind_of(self, pk: int) -> str | None:
        if pk in self.rows:
            return self.rows[pk].kind
        return self.s.scalar(select(Message.kind).where(Message.id == pk))

    def _link_one(self, msg: Row, known: dict[str, Row]) -> None:
        if msg.tip_id is not None or msg.kind not in LINKABLE:
            return
        tip = self._tip_by_refs(msg, known)
        if msg.kind in (MessageKind.TIP, MessageKind.FOLLOWUP):
            tip = tip or self.tips.get(msg.ref) or self._tip_by_ref(msg.ref)
            if tip is None:
                tip = self._new_tip(msg)
            elif msg.kind == MessageKind.TIP and tip.message_pk != msg.id:
                first = self._kind_of(tip.message_pk) if tip.message_pk else None
                if first != MessageKind.TIP:
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

    def _tip_by_ref(self, ref: str) -> TipRow | None:
        if not ref or ref in self.tips or ref in self.refs_loaded:
            return self.tips.get(ref)
        self.refs_loaded.add(ref)
        for tip in self._load_tips(Tip.station_id == self.station, Tip.ref == ref):
            self.tips[ref] = tip
        return self.tips.get(ref)

    def _new_tip(self, msg: Row) -> TipRow:
        hour = msg.received_hour or utcnow().replace(minute=0, second=0, microsecond=0)
        ind = msg.indexed
        category = ind.category if ind else "other"
        if ind and ind.contract_station and ind.contract_station != self.station:
            msg.warning = f"addressed to station {ind.contract_station}, found in {self.station}"
        tip = TipRow(None, msg.ref, msg.id, msg.subject, self._preview(msg), hour, fields={
            "station_id": self.station, "received_category": category, "category": category,
            "placement": ind.placement if ind else "", "status": Status.NEW.value,
            "likely_spam": ind.likely_spam if ind else "",
            "status_reason": "", "assignee": ""})
        self.new_tips.append(tip)
        self.tips[msg.ref] = tip
        return tip

    def _insert_tips(self) -> None:
        """Insert the tips created since the last call; they get their ids."""
        new, self.new_tips = self.new_tips, []
        if not new:
            return
        now = utcnow()
        values = [{**(t.fields or {}), "ref": t.ref, "ref_seq": ref_number(t.ref),
                   "message_pk": t.message_pk,
                   "subject": t.subject, "preview": t.preview,
                   "received_hour": t.received_hour, "updated_at": now} for t in new]
        table = _TABLES["tips"]
        result = self.s.execute(insert(table).returning(table.c.ref, table.c.id), values)
        ids: dict[str, int] = {ref: pk for ref, pk in result}
        for tip in new:
            tip.id = ids[tip.ref]
            tip.saved = tip.state()
            self.tip_rows[tip.id] = tip

    def _preview(self, msg: Row) -> str:
        return msg.indexed.preview if msg.indexed else msg.subject[:200]

    def _backfill(self, linked: list[Row], known: dict[str, Row]) -> list[Row]:
        """Earlier messages that reply to *linked* ones, or carry their tip's ref."""
        found: dict[int, Row] = {}
        for part in chunks(sorted({m.message_id for m in linked})):
            # A subquery, not a join: with a long IN list SQLite's planner chose to
            # scan every unlinked message (a cost growing with the ledger).
            replying = select(MessageRef.message_pk).where(MessageRef.target.in_(part))
            rows = self.s.execute(select(*_ROW_COLUMNS).where(
                Message.id.in_(replying), Message.tip_id.is_(None),
                Message.kind.in_(LINKABLE)))
            found.update((r.id, r) for r in map(self._row, rows))
        for part in chunks(sorted({m.ref for m in linked if m.ref})):
            found.update((r.id, r) for r in self._load(
                Message.station_id == self.station, Message.ref.in_(part),
                Message.tip_id.is_(None), Message.kind.in_(LINKABLE)))
        for m in found.values():
            known[m.message_id] = m
        return [m for m in found.values() if m.message_id not in self.tip_of]

    # -- locations -------------------------------------------------------------------

    def _locations(self, todo: Sequence[Fetched], messages: dict[str, Row],
                   fresh: set[int]) -> None:
        s = self.s
        pks = sorted({messages[f.message_id].id for f in todo if f.message_id in messages})
        where: dict[int, list[tuple[str, bool]]] = {}
        for part in chunks(pks):
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
        if locations:
            s.execute(insert(_TABLES["locations"]), locations)
        now = utcnow()
        if events:
            s.execute(insert(_TABLES["mail_events"]), [
                {**e, "station_id": self.station, "folder": self.folder, "at": now}
                for e in events])
