"""Queries behind the officers' screens: filtered pages of tips, and one tip in full.

Pure SQLAlchemy, no Textual: the screens call these from worker threads, and
tests and the benchmark call them directly. Lists are paged (``LIMIT/OFFSET``
on an index that matches the sort), so a 100k-tip ledger costs one page. A
database error (a locked ledger, an old schema) leaves here as a ``LedgerError``
line the screens show as a notification.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import TypeVarTuple

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.orm import Session

from ...core.text import clean_text, one_line
from ...errors import LedgerError
from ...fsmodes import open_private
from ..ledger.db import translated
from ..ledger.models import (
    LIST_ORDER,
    Attachment,
    Audit,
    Location,
    MailEvent,
    Message,
    Note,
    Tip,
)
from ..ledger.search import among_condition, tip_condition
from ..localtime import DEFAULT_ZONE, utc_bounds
from ..records import MessageKind

Ts = TypeVarTuple("Ts")
BODY_LIMIT = 20_000  # characters of one message body shown; the rest is counted


@dataclass(frozen=True)
class TipFilter:
    stations: tuple[str, ...]
    status: str | None = None
    category: str | None = None
    station: str | None = None
    placement: str | None = None
    verdict: str | None = None  # of_value | not_of_value | spam | "none"
    date_from: date | None = None
    date_to: date | None = None
    text: str = ""
    zone: str = DEFAULT_ZONE  # the station's days, for the date boxes
    assignees: tuple[str, ...] | None = None  # assigned to one of these ("": to nobody)


@dataclass(frozen=True)
class TipRow:
    id: int
    station_id: str
    ref: str
    received_hour: datetime
    category: str
    placement: str
    status: str
    assignee: str
    preview: str
    updated_at: datetime | None = None  # the last officer action (or mailbox signal)
    likely_spam: str = ""  # the relay's mark: many copies of this text


# A tip's verdict as the report counts it: the verdict kept when it moved on (to
# "handled"), else its status (rows from before the verdict column).
VERDICTS = ("of_value", "not_of_value", "spam")
VERDICT: ColumnElement[str] = func.coalesce(func.nullif(Tip.verdict, ""), Tip.status)
OPEN = ("new", "verifying")


def apply_filter(query: Select[*Ts], f: TipFilter, dialect: str) -> Select[*Ts]:
    stations = [f.station] if f.station in f.stations else list(f.stations)
    query = query.where(Tip.station_id.in_(stations))
    if f.status:
        query = query.where(Tip.status == f.status)
    if f.assignees is not None:
        query = query.where(Tip.assignee.in_(f.assignees))
    if f.category:
        query = query.where(Tip.category == f.category)
    if f.verdict in VERDICTS:
        query = query.where(VERDICT.in_([f.verdict]))
    elif f.verdict == "none":
        query = query.where(VERDICT.not_in(VERDICTS))
    if f.placement is not None:  # "station/placement"; "station/" is a tip without one
        station, _, placement = f.placement.partition("/")
        query = query.where(Tip.station_id == station, Tip.placement == placement)
    lo, hi = utc_bounds(f.date_from, f.date_to, f.zone)
    if lo is not None:
        query = query.where(Tip.received_hour >= lo)
    if hi is not None:
        query = query.where(Tip.received_hour < hi)
    if f.text.strip():
        cond: ColumnElement[bool] | None = tip_condition(dialect, f.text)
        query = query.where(cond if cond is not None else Tip.id < 0)
    return query


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


READING = "reading the ledger"


@translated(READING)
def count_tips(session: Session, f: TipFilter) -> int:
    return session.scalar(apply_filter(select(func.count(Tip.id)), f, _dialect(session))) or 0


@dataclass(frozen=True)
class Figures:
    """The report's counts for what the list shows (station/report.py counts the same)."""

    received: int = 0
    of_value: int = 0
    not_of_value: int = 0
    spam: int = 0
    handled: int = 0
    open: int = 0

    @property
    def of_value_percent(self) -> str:
        """As the report rounds it; "—" when nothing came in."""
        return f"{round(100 * self.of_value / self.received)}%" if self.received else "—"


@translated(READING)
def figures(session: Session, f: TipFilter) -> Figures:
    def count(cond: ColumnElement[bool]) -> ColumnElement[int]:
        return func.count(case((cond, 1)))

    query = select(func.count(Tip.id), *(count(VERDICT.in_([v])) for v in VERDICTS),
                   count(Tip.status.in_(["handled"])), count(Tip.status.in_(OPEN)))
    row = session.execute(apply_filter(query, f, _dialect(session))).one()
    return Figures(*(int(n or 0) for n in row))


@translated(READING)
def position_of(session: Session, f: TipFilter, tip_id: int) -> int | None:
    """Where tip *tip_id* stands in the filtered list (newest first), None if not in it."""
    row = session.execute(apply_filter(select(Tip.received_hour, Tip.ref_seq).where(
        Tip.id == tip_id), f, _dialect(session))).first()
    if row is None:
        return None
    hour, seq = row
    # Ahead in the list's order (page_tips): later hour, then higher running number, then id.
    ahead = or_(Tip.received_hour > hour,
                and_(Tip.received_hour == hour,
                     or_(Tip.ref_seq > seq, and_(Tip.ref_seq == seq, Tip.id > tip_id))))
    return session.scalar(apply_filter(select(func.count(Tip.id)).where(ahead), f,
                                       _dialect(session))) or 0


SEARCH_AHEAD = 4  # pages of the list a word's first page looks among first


@translated(READING)
def page_tips(session: Session, f: TipFilter, offset: int, limit: int) -> list[TipRow]:
    """One page of the list, newest first.

    A search's first page on SQLite is first looked for among the first
    ``SEARCH_AHEAD`` pages of the list without the words: a word in half the tips
    finds its page there in a few milliseconds. That page is exact when it is
    full, since every tip further down the list comes after those; when it is
    not, the whole search runs.
    """
    query = select(Tip.id, Tip.station_id, Tip.ref, Tip.received_hour, Tip.category,
                   Tip.placement, Tip.status, Tip.assignee, Tip.preview, Tip.updated_at,
                   Tip.likely_spam)
    dialect = _dialect(session)
    if offset == 0 and dialect == "sqlite" and f.text.strip():
        head = apply_filter(select(Tip.id), replace(f, text=""), dialect)
        ahead = head.order_by(*LIST_ORDER).limit(SEARCH_AHEAD * limit).cte("head")
        cond = among_condition(f.text, ahead)
        if cond is not None:
            rows = _rows(session, query.where(Tip.id.in_(select(ahead.c.id)), cond)
                         .order_by(*LIST_ORDER).limit(limit))
            if len(rows) == limit:
                return rows
    return _rows(session, apply_filter(query, f, dialect).order_by(*LIST_ORDER)
                 .offset(offset).limit(limit))


def _rows(session: Session, query: Select[*Ts]) -> list[TipRow]:
    return [TipRow(**row._asdict()) for row in session.execute(query)]


@translated(READING)
def newest_tip(session: Session) -> int:
    """The highest tip id: one index lookup, cheap enough to ask every few seconds."""
    return int(session.scalar(select(func.max(Tip.id))) or 0)


@translated(READING)
def arrived_since(session: Session, stations: tuple[str, ...], after: int) -> int:
    """Tips of *stations* indexed after tip *after* (whatever the filters)."""
    return int(session.scalar(select(func.count(Tip.id)).where(
        Tip.id > after, Tip.station_id.in_(stations))) or 0)


@translated(READING)
def forged_count(session: Session, stations: tuple[str, ...]) -> int:
    """Mail that claimed to be the relay's and failed its signature (never a tip)."""
    return int(session.scalar(select(func.count()).select_from(Message).where(
        Message.kind == MessageKind.FORGED.value, Message.station_id.in_(stations))) or 0)


def placements_in_use(session: Session, stations: tuple[str, ...]) -> list[tuple[str, str]]:
    """(station, placement) of every tip, "" for a tip sent without a poster."""
    rows = session.execute(select(Tip.station_id, Tip.placement)
                           .where(Tip.station_id.in_(stations)).distinct())
    return sorted((station, placement) for station, placement in rows)


# ---- one tip in full ----------------------------------------------------------------


@dataclass(frozen=True)
class AttachmentInfo:
    id: int
    filename: str
    content_type: str
    size: int
    path: Path | None


@dataclass(frozen=True)
class ThreadItem:
    kind: str
    received_hour: datetime | None
    subject: str
    body: str
    hidden_chars: int
    sender: str
    attachments: tuple[AttachmentInfo, ...]


@dataclass(frozen=True)
class HistoryItem:
    at: datetime
    who: str
    action: str
    old: str
    new: str
    reason: str


@dataclass
class TipDetail:
    id: int
    station_id: str
    ref: str
    received_hour: datetime
    category: str
    received_category: str
    placement: str
    status: str
    status_reason: str
    assignee: str
    thread: list[ThreadItem] = field(default_factory=list)
    notes: list[HistoryItem] = field(default_factory=list)
    history: list[HistoryItem] = field(default_factory=list)
    signals: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, folder, flags)
    likely_spam: str = ""  # the relay's signed mark, e.g. "near-duplicate"

    @property
    def attachments(self) -> list[AttachmentInfo]:
        return [a for item in self.thread for a in item.attachments]


def _attachment_path(stored: str, base: Path) -> Path | None:
    if not stored:
        return None
    path = Path(stored)
    return path if path.is_absolute() else base / path


@translated(READING)
def load_detail(session: Session, tip_id: int, attachments_dir: Path) -> TipDetail | None:
    """The tip, its whole thread, attachments, notes, mailbox signals and history."""
    tip = session.get(Tip, tip_id)
    if tip is None:
        return None
    detail = TipDetail(tip.id, tip.station_id, tip.ref, tip.received_hour, tip.category,
                       tip.received_category, tip.placement, tip.status, tip.status_reason,
                       tip.assignee, likely_spam=tip.likely_spam)
    in_thread = or_(Message.tip_id == tip.id, Message.id == tip.message_pk)
    messages = session.scalars(select(Message).where(in_thread).order_by(
        func.coalesce(Message.received_hour, Message.indexed_at), Message.id)).all()
    ids = [m.id for m in messages]
    files: dict[int, list[AttachmentInfo]] = {}
    for a in session.scalars(select(Attachment).where(Attachment.message_pk.in_(ids))
                             .order_by(Attachment.id)):
        files.setdefault(a.message_pk, []).append(AttachmentInfo(
            a.id, one_line(a.filename, max_length=120), one_line(a.content_type), a.size,
            _attachment_path(a.stored_path, attachments_dir)))
    for m in messages:
        # Clean a bounded slice only: a 1 MB body must not stall the screen.
        raw = m.text_body[: BODY_LIMIT * 2]
        cleaned = clean_text(raw)
        hidden = len(m.text_body) - len(raw) + max(len(cleaned) - BODY_LIMIT, 0)
        detail.thread.append(ThreadItem(
            m.kind, m.received_hour, one_line(m.subject, max_length=300),
            cleaned[:BODY_LIMIT], hidden,
            one_line(m.sender, max_length=320), tuple(files.get(m.id, ()))))
    for n in session.scalars(select(Note).where(Note.tip_id == tip.id).order_by(Note.at, Note.id)):
        detail.notes.append(HistoryItem(n.at, n.author, "note", "", clean_text(n.text), ""))
    for r in session.scalars(select(Audit).where(Audit.tip_id == tip.id)
                             .order_by(Audit.at, Audit.id)):
        detail.history.append(HistoryItem(r.at, r.actor, r.action, r.old, r.new, r.reason))
    for e in session.scalars(select(MailEvent).where(MailEvent.message_pk.in_(ids))
                             .order_by(MailEvent.at, MailEvent.id)):
        detail.history.append(HistoryItem(e.at, "", e.kind, "", e.folder, e.detail))
    detail.history.sort(key=lambda h: h.at)
    kinds = {m.id: m.kind for m in messages}
    for loc in session.scalars(select(Location).where(Location.message_pk.in_(ids),
                                                      Location.gone.is_(False))
                               .order_by(Location.message_pk, Location.folder)):
        signal = (kinds[loc.message_pk], one_line(loc.folder), one_line(loc.flags))
        if signal not in detail.signals:  # one line per message and folder
            detail.signals.append(signal)
    return detail


_UNSAFE_NAME = re.compile(r"[^\w.\- ]+", re.UNICODE)


def safe_filename(name: str) -> str:
    """A file name that cannot climb out of the chosen folder or hide its type."""
    base = one_line(name).replace("/", "_").replace("\\", "_")
    base = _UNSAFE_NAME.sub("_", base).strip(" .") or "attachment"
    return base[:120]


def save_attachment(src: Path, folder: Path, filename: str) -> Path:
    """Copy *src* into *folder* as *filename*, 0600 (it is tip content), never
    overwriting an existing file."""
    if not src.is_file():
        raise LedgerError(f"attachment file {src} is missing: check ledger.attachments_dir",
                          "file_missing", path=str(src))
    if not folder.is_dir():
        raise LedgerError(f"{folder} is not a folder: choose an existing folder",
                          "not_a_folder", path=str(folder))
    name = safe_filename(filename)
    stem, suffix = Path(name).stem, Path(name).suffix
    target, n = folder / name, 0
    try:
        while True:
            try:
                fd = open_private(target, os.O_WRONLY | os.O_EXCL)
                break
            except FileExistsError:
                n += 1
                target = folder / f"{stem}-{n}{suffix}"
        with os.fdopen(fd, "wb") as out, src.open("rb") as data:
            shutil.copyfileobj(data, out)
    except OSError as exc:
        raise LedgerError(f"cannot save to {target}: {exc}; choose a writable folder",
                          "cannot_save", path=str(target), why=exc.strerror or str(exc)) from exc
    return target
