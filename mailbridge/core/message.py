"""The forwarded-message contract: Submission -> EmailMessage, and parsing it back.

The builder and the parser of every ``X-Mailbridge-*`` header live in this one
file so the relay and the station side cannot drift apart. The message is
built from an allow-list of fields: nothing of the incoming request (address,
headers, cookies, exact time) is ever copied into it.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime
from typing import Protocol

from .receipts import is_ref
from .text import clean_text, first_words, is_slug, one_line

HEADER_REF = "X-Mailbridge-Ref"
HEADER_STATION = "X-Mailbridge-Station"
HEADER_CATEGORY = "X-Mailbridge-Category"
HEADER_PLACEMENT = "X-Mailbridge-Placement"
HEADER_LOOP = "X-Loop"
LOOP_VALUE = "mailbridge"

MAX_TEXT = 10_000
MAX_WHERE = 500
# One boundary for every tip's text/HTML pair. The station's parser (the standard
# library's) compiles a pattern for each distinct boundary it meets, a third of
# its work on a tip; a fixed one is compiled once per process. A text that
# contains it gets a random one, so a tipster cannot forge a part.
BOUNDARY = "=_mailbridge_alternative"


def hour_of(moment: datetime) -> datetime:
    """Truncate to the hour, in UTC: the finest time kept for anything a tipster did."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Attachment:
    """An attachment that has already been cleaned (re-encoded, renamed)."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Submission:
    """Everything a tip is allowed to carry. Nothing else reaches the message."""

    station_id: str
    station_name: str
    mailbox: str
    ref: str
    category_id: str
    category_label: str
    text: str
    placement_id: str = ""
    placement_label: str = ""
    where_when: str = ""
    received_hour: datetime = field(default_factory=lambda: hour_of(datetime.now(UTC)))
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class Envelope:
    """The relay's side of the message: its address, domain and reply token."""

    relay_address: str
    relay_domain: str
    reply_token: str
    message_id: str = ""
    references: tuple[str, ...] = ()


def new_message_id(domain: str) -> str:
    """A random Message-ID at the relay's domain: carries no time and no sequence."""
    return f"<{secrets.token_hex(16)}@{domain}>"


def _identity(text: str) -> str:
    return text


def build_message(
    sub: Submission,
    env: Envelope,
    *,
    gettext: Callable[[str], str] = _identity,
    now: datetime | None = None,
) -> EmailMessage:
    """Build the message that lands in the station mailbox.

    Every value goes through text hygiene; headers are one line, so a field
    cannot inject CRLF; the HTML part escapes everything.
    """
    _ = gettext
    text = clean_text(sub.text, max_length=MAX_TEXT)
    where = clean_text(sub.where_when, max_length=MAX_WHERE)
    category = one_line(sub.category_label, max_length=80)
    placement = one_line(sub.placement_label, max_length=120)
    ref = one_line(sub.ref)
    hour = hour_of(sub.received_hour)

    msg = EmailMessage(policy=default_policy)
    msg["From"] = Address(display_name="mailbridge", addr_spec=env.relay_address)
    msg["To"] = Address(display_name=one_line(sub.station_name, max_length=80),
                        addr_spec=sub.mailbox)
    msg["Reply-To"] = f"reply+{env.reply_token}@{env.relay_domain}"
    preview = first_words(text, max_length=60) or _("(no text)")
    msg["Subject"] = f"[{ref}] {category} — {preview}"
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = env.message_id or new_message_id(env.relay_domain)
    if env.references:
        msg["In-Reply-To"] = env.references[-1]
        msg["References"] = " ".join(env.references)
    msg[HEADER_REF] = ref
    msg[HEADER_STATION] = sub.station_id
    msg[HEADER_CATEGORY] = sub.category_id
    if sub.placement_id:
        msg[HEADER_PLACEMENT] = sub.placement_id
    msg[HEADER_LOOP] = LOOP_VALUE

    rows: list[tuple[str, str]] = [
        (_("Reference"), ref),
        (_("Category"), category),
    ]
    if placement:
        rows.append((_("Poster"), placement))
    if where:
        rows.append((_("Where / when"), where))
    rows.append((_("Received (hour, UTC)"), hour.strftime("%Y-%m-%d %H:00")))

    plain = "\n".join(f"{label}: {value}" for label, value in rows)
    plain += "\n\n" + (text or _("(no text)")) + "\n\n-- \n"
    plain += _("Reply to this message to answer the tipster; they read it with their receipt code.")
    plain += "\n"
    msg.set_content(plain, subtype="plain", charset="utf-8")

    cells = "".join(
        f"<tr><th align=left>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
        for label, value in rows
    )
    body = html.escape(text or _("(no text)")).replace("\n", "<br>\n")
    page = f"<!doctype html><html><body><table>{cells}</table><p>{body}</p></body></html>\n"
    msg.add_alternative(page, subtype="html", charset="utf-8")
    if BOUNDARY not in plain + page:
        msg.set_boundary(BOUNDARY)
    for att in sub.attachments:
        maintype, _slash, subtype = att.content_type.partition("/")
        msg.add_attachment(att.data, maintype=maintype, subtype=subtype, filename=att.filename)
    return msg


@dataclass(frozen=True)
class ContractHeaders:
    """What the station side reads back from a forwarded message's headers."""

    ref: str
    station_id: str
    category_id: str
    placement_id: str
    message_id: str
    references: tuple[str, ...]


class Headers(Protocol):
    """A message (``email.message.Message``) or a dict of its headers by lower-case name."""

    def get(self, name: str, /) -> object: ...


def _header(msg: Headers, name: str) -> str:
    value = msg.get(name.lower())
    return one_line(str(value)) if value is not None else ""


def parse_contract(msg: Headers) -> ContractHeaders | None:
    """Read the ``X-Mailbridge-*`` headers back; None if this is not a relay message.

    Values are checked against the same shapes the builder produces, so a
    hand-written look-alike with odd values is not mistaken for a tip.
    """
    ref = _header(msg, HEADER_REF)
    station = _header(msg, HEADER_STATION)
    category = _header(msg, HEADER_CATEGORY)
    placement = _header(msg, HEADER_PLACEMENT)
    if not (is_ref(ref) and is_slug(station) and is_slug(category)):
        return None
    if placement and not is_slug(placement):
        return None
    return ContractHeaders(
        ref=ref,
        station_id=station,
        category_id=category,
        placement_id=placement,
        message_id=_header(msg, "Message-ID"),
        references=message_ids(_header(msg, "References") + " " + _header(msg, "In-Reply-To")),
    )


def message_ids(value: str) -> tuple[str, ...]:
    """The ``<...>`` ids in a References / In-Reply-To value, in order, without repeats."""
    seen: list[str] = []
    for part in value.replace(",", " ").split():
        if part.startswith("<") and part.endswith(">") and part not in seen:
            seen.append(part)
    return tuple(seen)


def reply_token_of(addresses: Sequence[str], relay_domain: str) -> str | None:
    """The token of the first ``reply+TOKEN@relay_domain`` address, if any."""
    suffix = "@" + relay_domain.lower()
    for address in addresses:
        addr = address.strip().strip("<>").lower()
        if addr.startswith("reply+") and addr.endswith(suffix):
            return addr[len("reply+") : -len(suffix)]
    return None
