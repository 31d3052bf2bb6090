"""The ledger: what the poller indexed from station mailboxes, plus officers' workflow.

Two halves, one schema:
- indexing (written by the poller only): ``Message`` (content identity),
  ``Location`` (station, folder, UIDVALIDITY, UID -> message; tombstoned, never
  deleted), ``FolderState`` (the per-folder cursor), ``MailEvent`` (flags, moves
  and deletions seen in the mailbox), ``Attachment``, ``Quarantine``;
- workflow (written by officers through the terminal UI): ``Tip`` status,
  category, assignee; ``Note``; append-only ``Audit``.

Times are naive UTC. Anything the tipster did is kept to the hour.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Status(enum.StrEnum):
    NEW = "new"
    VERIFYING = "verifying"
    OF_VALUE = "of_value"
    NOT_OF_VALUE = "not_of_value"
    SPAM = "spam"
    HANDLED = "handled"


class Message(Base):
    """One message, whatever folders it sits in. Identity: (station, Message-ID)."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("station_id", "message_id"),
        Index("ix_messages_station_ref", "station_id", "ref"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station_id: Mapped[str] = mapped_column(String(32), index=True)
    message_id: Mapped[str] = mapped_column(String(512))  # synthetic when missing
    raw_sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    text_body: Mapped[str] = mapped_column(Text, default="")
    # What the officers' search indexes: the writer's own words (station/searchtext.py).
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    sender: Mapped[str] = mapped_column(String(320), default="")  # officers / other mail only
    received_hour: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    in_reply_to: Mapped[str] = mapped_column(String(512), default="")
    references: Mapped[str] = mapped_column(Text, default="")
    # X-Mailbridge-Ref of relay mail, or the [REF] tag in another message's subject.
    ref: Mapped[str] = mapped_column(String(32), default="")
    # Why a thread link is doubtful, e.g. a subject tag from an unauthorised sender.
    warning: Mapped[str] = mapped_column(Text, default="")
    tip_id: Mapped[int | None] = mapped_column(ForeignKey("tips.id"), index=True)
    indexed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    tip: Mapped[Tip | None] = relationship(back_populates="thread", foreign_keys=[tip_id])
    attachments: Mapped[list[Attachment]] = relationship(back_populates="message")
    locations: Mapped[list[Location]] = relationship(back_populates="message")


class MessageRef(Base):
    """One Message-ID named in a message's In-Reply-To/References: threads by index lookup."""

    __tablename__ = "message_refs"
    __table_args__ = (UniqueConstraint("message_pk", "target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"))
    target: Mapped[str] = mapped_column(String(512), index=True)


class Attachment(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(127))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    stored_path: Mapped[str] = mapped_column(Text, default="")

    message: Mapped[Message] = relationship(back_populates="attachments")


class Location(Base):
    """Where a message sits: (station, folder, UIDVALIDITY, UID). Tombstoned, never deleted."""

    __tablename__ = "locations"
    __table_args__ = (
        UniqueConstraint("station_id", "folder", "uidvalidity", "uid"),
        Index("ix_locations_live", "station_id", "folder", "gone"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    station_id: Mapped[str] = mapped_column(String(32))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    flags: Mapped[str] = mapped_column(Text, default="")  # space-separated, sorted
    modseq: Mapped[int] = mapped_column(BigInteger, default=0)
    gone: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    gone_at: Mapped[datetime | None] = mapped_column(DateTime)

    message: Mapped[Message] = relationship(back_populates="locations")


class FolderState(Base):
    """The per-folder cursor, advanced in the same transaction as the rows it covers."""

    __tablename__ = "folder_state"

    station_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    folder: Mapped[str] = mapped_column(String(255), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger, default=0)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    highestmodseq: Mapped[int] = mapped_column(BigInteger, default=0)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=0)  # STATUS at the last sync
    message_count: Mapped[int] = mapped_column(BigInteger, default=0)  # at the last sync
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class MailEvent(Base):
    """Something an officer did in a mail client: flags, keywords, move, delete."""

    __tablename__ = "mail_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station_id: Mapped[str] = mapped_column(String(32), index=True)
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # flags | moved | deleted | copied | rebound
    folder: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[str] = mapped_column(Text, default="")  # e.g. "+\\Flagged -\\Seen"
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Quarantine(Base):
    """Raw bytes of a message that failed to parse, with the reason; the batch goes on."""

    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("station_id", "folder", "uidvalidity", "uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station_id: Mapped[str] = mapped_column(String(32))
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), index=True)
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Tip(Base):
    """A tip and its workflow state. Created once per (station, ref)."""

    __tablename__ = "tips"
    __table_args__ = (
        UniqueConstraint("station_id", "ref"),
        Index("ix_tips_station_status", "station_id", "status"),
        # The officers' list is newest first under any one filter: one index per filter.
        # Each ends with ref_seq: one hour's tips in the order they were accepted.
        Index("ix_tips_received_hour", "received_hour", "ref_seq"),
        Index("ix_tips_station_received", "station_id", "received_hour", "ref_seq"),
        Index("ix_tips_status_received", "status", "received_hour", "ref_seq"),
        Index("ix_tips_category_received", "category", "received_hour", "ref_seq"),
        Index("ix_tips_placement_received", "placement", "received_hour", "ref_seq"),
        Index("ix_tips_message_pk", "message_pk"),  # search: message -> its tip
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station_id: Mapped[str] = mapped_column(String(32))
    ref: Mapped[str] = mapped_column(String(32))
    # The ref's running number: within one hour the list is in the order tips were
    # accepted (a delivery delay or a re-index reorders ids, never refs).
    ref_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id", use_alter=True))
    received_category: Mapped[str] = mapped_column(String(32))
    category: Mapped[str] = mapped_column(String(32), index=True)
    placement: Mapped[str] = mapped_column(String(32), default="", index=True)
    received_hour: Mapped[datetime] = mapped_column(DateTime)
    subject: Mapped[str] = mapped_column(Text, default="")
    preview: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default=Status.NEW.value)
    status_reason: Mapped[str] = mapped_column(Text, default="")
    # The last verdict (of_value / not_of_value / spam), kept when the tip is handled,
    # so figures still count a handled tip by what it was worth.
    verdict: Mapped[str] = mapped_column(String(16), default="", server_default="")
    assignee: Mapped[str] = mapped_column(String(120), default="")
    # The relay's signed mark (X-Mailbridge-Likely-Spam): "near-duplicate", or "".
    likely_spam: Mapped[str] = mapped_column(String(32), default="", server_default="")
    first_action_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    message: Mapped[Message | None] = relationship(foreign_keys=[message_pk])
    thread: Mapped[list[Message]] = relationship(back_populates="tip",
                                                 foreign_keys=[Message.tip_id])
    notes: Mapped[list[Note]] = relationship(back_populates="tip")


# The officers' list: newest hour first, then the relay's running number, then the id
# (so pages never overlap). The list's indexes above end the same way.
LIST_ORDER = (Tip.received_hour.desc(), Tip.ref_seq.desc(), Tip.id.desc())


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tip_id: Mapped[int] = mapped_column(ForeignKey("tips.id"), index=True)
    author: Mapped[str] = mapped_column(String(120))
    text: Mapped[str] = mapped_column(Text)
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    tip: Mapped[Tip] = relationship(back_populates="notes")


class Audit(Base):
    """Append-only: who changed what on a tip, and when. Never updated or deleted."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tip_id: Mapped[int] = mapped_column(ForeignKey("tips.id"), index=True)
    station_id: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(32))  # status | category | assign | note | signal
    old: Mapped[str] = mapped_column(Text, default="")
    new: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    # The mailbox signal (MailEvent) this row applied, if any: unique, so a signal
    # is applied once even when several terminals apply signals at the same time.
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("mail_events.id"), unique=True, index=True
    )
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
