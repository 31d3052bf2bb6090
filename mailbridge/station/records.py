"""The plain records the poller hands the ledger: no I/O, no database, no imports back.

The poller makes them (``poller/index.py`` parses a message into ``Indexed``,
the syncs wrap it in ``Fetched``) and the ledger stores them; both import
them from here, so the ledger never imports the poller
(``tests/unit/test_layout.py`` checks there is no import cycle).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, fields
from datetime import datetime


class MessageKind(enum.StrEnum):
    """What an indexed message is. Only ``tip`` creates a Tip row."""

    TIP = "tip"                # a forwarded tip from the relay
    FOLLOWUP = "followup"      # more information from the same tipster, via the relay
    REPLY = "reply"            # an officer's answer (sent folder or thread)
    OTHER = "other"            # ordinary mail in the mailbox; never a tip
    FORGED = "forged"          # claims to be the relay's but fails its signature
    AUTO = "auto"              # auto-replies, bounces, DSNs, mailing lists
    PLACEHOLDER = "placeholder"  # too big to fetch: only size and headers known
    QUARANTINED = "quarantined"  # could not be parsed: raw bytes kept in ``quarantine``


@dataclass(frozen=True)
class Part:
    """An attachment as found in the message (content-addressed by the store)."""

    filename: str
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Indexed:
    """Everything the ledger keeps about one message, decided without I/O."""

    message_id: str
    raw_sha256: str
    size: int
    kind: MessageKind
    subject: str = ""
    text_body: str = ""
    sender: str = ""
    received_hour: datetime | None = None
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    ref: str = ""               # contract ref (relay mail) or [REF] subject tag (other mail)
    category: str = ""
    placement: str = ""
    contract_station: str = ""
    likely_spam: str = ""       # the relay's signed mark, e.g. "near-duplicate"
    tip_text: str = ""          # the tipster's own words (relay mail)
    preview: str = ""           # of tip_text, for the tip row (relay mail)
    search_text: str = ""       # what the officers' search indexes (station/searchtext.py)
    attachments: tuple[Part, ...] = ()
    problems: tuple[str, ...] = ()
    warning: str = ""

    @property
    def is_relay(self) -> bool:
        """Signed by the relay (only such mail is a tip or a tipster's follow-up)."""
        return self.kind in (MessageKind.TIP, MessageKind.FOLLOWUP)


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
    forged: int = 0
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
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                        if getattr(self, f.name)) or "no changes"
