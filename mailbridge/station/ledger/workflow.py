"""Officers' workflow on a tip: status, category, assignment, notes, mailbox signals.

Every change writes one append-only ``Audit`` row in the same transaction as
the change itself, so the history can never disagree with the state. The
functions take an open ``Session`` and flush but never commit: the caller owns
the transaction (the terminal UI commits once per officer action, with
``commit``). A database error (a locked ledger) leaves as a ``LedgerError``.

Status graph (a reason is required for every move except ``new -> verifying``)::

    new ──▶ verifying ──▶ of_value / not_of_value / spam ──▶ handled
     └──────────────────────▲ (obvious spam or nonsense)        │
                verifying ◀─┴───────── reopen ◀─────────────────┘
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ...core.text import clean_text, one_line, search_form
from ...errors import WorkflowError
from .db import translated
from .models import Audit, MailEvent, Message, Note, Status, Tip, utcnow

VERDICTS = frozenset({Status.OF_VALUE, Status.NOT_OF_VALUE, Status.SPAM})
OPEN = frozenset({Status.NEW, Status.VERIFYING})
TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    Status.NEW: frozenset({Status.VERIFYING, Status.NOT_OF_VALUE, Status.SPAM}),
    Status.VERIFYING: frozenset(VERDICTS),
    Status.OF_VALUE: frozenset({Status.HANDLED, Status.VERIFYING}),
    Status.NOT_OF_VALUE: frozenset({Status.HANDLED, Status.VERIFYING}),
    Status.SPAM: frozenset({Status.HANDLED, Status.VERIFYING}),
    Status.HANDLED: frozenset({Status.VERIFYING}),
}
_STATUS_VALUES = frozenset(s.value for s in Status)
MAILBOX_ACTOR = "mailbox"  # the actor of audit rows applied from mailbox signals
MAX_NOTE = 10_000
MAX_REASON = 1_000
MIN_REASON = 3  # "x" or "." explains nothing to the next officer or to command
RECORDING = "recording the change"


def allowed_statuses(current: str) -> frozenset[Status]:
    """The statuses a tip in *current* may move to (empty for an unknown status)."""
    try:
        return TRANSITIONS[Status(current)]
    except ValueError:
        return frozenset()


def needs_reason(current: str, new: str) -> bool:
    return not (current == Status.NEW and new == Status.VERIFYING)


def _reason(reason: str) -> str:
    """The cleaned reason; one given must say something."""
    why = clean_text(reason, max_length=MAX_REASON)
    if why and len(why) < MIN_REASON:
        raise WorkflowError(f"the reason {why!r} is too short: write at least "
                            f"{MIN_REASON} characters", "short_reason", reason=why,
                            min=str(MIN_REASON))
    return why


def _tip(session: Session, tip_id: int) -> Tip:
    tip = session.get(Tip, tip_id)
    if tip is None:
        raise WorkflowError(f"tip {tip_id} is not in the ledger: refresh the list", "gone")
    return tip


def _actor(actor: str) -> str:
    name = one_line(actor, max_length=120)
    if not name:
        raise WorkflowError("no officer name: add the OS account under stations.<id>.officers",
                            "no_officer")
    return name


def _record(session: Session, tip: Tip, actor: str, action: str, old: str, new: str,
            reason: str = "", event_id: int | None = None) -> Audit:
    now = utcnow()
    tip.updated_at = now
    if tip.first_action_at is None:
        tip.first_action_at = now
    row = Audit(tip_id=tip.id, station_id=tip.station_id, actor=actor, action=action,
                old=old, new=new, reason=reason, event_id=event_id, at=now)
    session.add(row)
    session.flush()
    return row


@translated("saving the change")
def commit(session: Session) -> None:
    """Commit one officer action: the change and its audit row together."""
    session.commit()


def _set_status(session: Session, tip_id: int, status: str, *, actor: str,
               reason: str = "", event_id: int | None = None) -> Audit:
    """Move a tip along the status graph; a verdict is remembered for the figures."""
    tip = _tip(session, tip_id)
    who = _actor(actor)
    try:
        target = Status(status)
    except ValueError:
        raise WorkflowError(f"unknown status {status!r}: choose among "
                            f"{', '.join(s.value for s in Status)}", "unknown_status",
                            status=status) from None
    if target not in allowed_statuses(tip.status):
        allowed = ",".join(sorted(s.value for s in allowed_statuses(tip.status)))
        raise WorkflowError(f"{tip.ref} cannot go from {tip.status} to {target.value}: "
                            f"allowed: {allowed.replace(',', ', ') or 'none'}", "transition",
                            ref=tip.ref, old=tip.status, new=target.value, allowed=allowed)
    why = _reason(reason)
    if not why and needs_reason(tip.status, target):
        raise WorkflowError(f"moving {tip.ref} to {target.value} needs a reason",
                            "needs_reason", ref=tip.ref, new=target.value)
    old = tip.status
    tip.status = target.value
    tip.status_reason = why
    if target in VERDICTS:
        tip.verdict = target.value
    elif target in OPEN:
        tip.verdict = ""
    return _record(session, tip, who, "status", old, target.value, why, event_id)


set_status = translated(RECORDING)(_set_status)


@translated(RECORDING)
def set_category(session: Session, tip_id: int, category: str, *, actor: str,
                 known: Collection[str], reason: str = "") -> Audit:
    """Correct the category; the tipster's original stays in ``received_category``."""
    tip = _tip(session, tip_id)
    who = _actor(actor)
    if category not in known:
        raise WorkflowError(f"unknown category {category!r}: choose among "
                            f"{', '.join(sorted(known))} (or add it under [[categories]])",
                            "unknown_category", category=category)
    if category == tip.category:
        raise WorkflowError(f"{tip.ref} is already in category {category}", "same_category",
                            ref=tip.ref, category=category)
    old, tip.category = tip.category, category
    return _record(session, tip, who, "category", old, category, _reason(reason))


@translated(RECORDING)
def assign(session: Session, tip_id: int, assignee: str, *, actor: str,
           officers: Collection[str]) -> Audit:
    """Assign to one of the station's officers; an empty name unassigns."""
    tip = _tip(session, tip_id)
    who = _actor(actor)
    if assignee and assignee not in officers:
        raise WorkflowError(f"{assignee!r} is not an officer of station {tip.station_id}: "
                            f"add them under stations.{tip.station_id}.officers",
                            "not_officer", assignee=assignee, station=tip.station_id)
    if assignee == tip.assignee:
        raise WorkflowError(f"{tip.ref} is already assigned to {assignee or 'nobody'}",
                            "same_assignee", ref=tip.ref, assignee=assignee)
    old, tip.assignee = tip.assignee, assignee
    return _record(session, tip, who, "assign", old, assignee)


@translated(RECORDING)
def add_note(session: Session, tip_id: int, text: str, *, actor: str) -> Note:
    """An internal note: officers only, never sent to the tipster."""
    tip = _tip(session, tip_id)
    who = _actor(actor)
    body = clean_text(text, max_length=MAX_NOTE)
    if not body:
        raise WorkflowError("the note is empty: type some text first", "empty_note")
    note = Note(tip_id=tip.id, author=who, text=body, search_text=search_form(body),
                at=utcnow())
    session.add(note)
    _record(session, tip, who, "note", "", one_line(body, max_length=200))
    return note


@dataclass(frozen=True)
class Signal:
    """A mailbox event that maps to a status by config."""

    event_id: int
    tip_id: int
    status: str
    reason: str


def signal_status(kind: str, folder: str, detail: str, *,
                  folder_status: Mapping[str, str],
                  flag_status: Mapping[str, str]) -> tuple[str, str] | None:
    """Map one mailbox event to ``(status, reason)``, or None when config maps nothing.

    Folders match case-insensitively (``ledger.folder_status``); flags and
    keywords added (``+\\Flagged``, ``+Verified``) match with or without the
    backslash (``ledger.flag_status``).
    """
    if kind in ("moved", "copied") and folder:
        folders = {k.casefold(): v for k, v in folder_status.items()}
        status = folders.get(folder.casefold())
        if status:
            return status, f"folder {folder}"
    if kind == "flags":
        flags = {k.lstrip("\\").casefold(): v for k, v in flag_status.items()}
        for token in detail.split():
            if token.startswith("+"):
                status = flags.get(token[1:].lstrip("\\").casefold())
                if status:
                    return status, f"flag {token[1:]}"
    return None


@translated("reading mailbox signals")
def pending_signals(session: Session, *, folder_status: Mapping[str, str],
                    flag_status: Mapping[str, str]) -> list[Signal]:
    """Mapped mailbox events newer than the last one applied."""
    if not folder_status and not flag_status:
        return []
    last = session.scalar(select(func.max(Audit.event_id))) or 0
    rows = session.execute(
        select(MailEvent.id, MailEvent.kind, MailEvent.folder, MailEvent.detail,
               func.coalesce(Message.tip_id, Tip.id))
        .join(Message, Message.id == MailEvent.message_pk)
        .outerjoin(Tip, Tip.message_pk == Message.id)
        .where(MailEvent.id > last, or_(Message.tip_id.is_not(None), Tip.id.is_not(None)))
        .order_by(MailEvent.id)
    ).all()
    found = []
    for event_id, kind, folder, detail, tip_id in rows:
        mapped = signal_status(kind, folder, detail, folder_status=folder_status,
                               flag_status=flag_status)
        if mapped and mapped[0] in _STATUS_VALUES:
            found.append(Signal(event_id, tip_id, mapped[0], mapped[1]))
    return found


@translated("applying mailbox signals")
def apply_signals(session: Session, *, folder_status: Mapping[str, str],
                  flag_status: Mapping[str, str]) -> int:
    """Apply mapped mailbox signals as status changes; commit each; return how many.

    A signal that the status graph does not allow (say, a handled tip filed
    again into "Verified") is skipped, not forced. Safe to run from several
    terminals at once: the audit row's unique ``event_id`` lets one win.
    """
    applied = 0
    for sig in pending_signals(session, folder_status=folder_status, flag_status=flag_status):
        tip = session.get(Tip, sig.tip_id)
        if tip is None or Status(sig.status) not in allowed_statuses(tip.status):
            continue
        try:
            _set_status(session, sig.tip_id, sig.status, actor=MAILBOX_ACTOR,
                        reason=sig.reason, event_id=sig.event_id)
            session.commit()
        except (WorkflowError, IntegrityError):  # refused, or another terminal was first
            session.rollback()
            continue
        applied += 1
    return applied
