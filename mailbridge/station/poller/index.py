"""The pure mailbox-to-ledger mapping: raw message bytes in, an ``Indexed`` record out.

No I/O and no database: the IMAP and maildir pollers both call ``index_message``
and hand the result to the ledger store, so both index a message identically.

Mail in the wild is hostile or merely broken, so nothing here raises on bad
input. Headers are read raw (compat32) and decoded word by word, which joins
split encoded-words and copes with 8-bit bytes; bodies are decoded with a
charset fallback chain and NFC-normalised (windows-1258 decodes to combining
marks). Whatever had to be guessed is listed in ``problems``: the store keeps
the raw bytes of such messages in quarantine for review, and the batch goes on.
"""

from __future__ import annotations

import codecs
import email
import hashlib
import html
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from email import errors as email_errors
from email.header import decode_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from ...core.message import (
    HEADER_LOOP,
    RelayIdentity,
    body_digest,
    ciphertext,
    has_contract,
    is_encrypted,
    message_ids,
    verify_contract,
)
from ...core.receipts import is_ref
from ...core.text import clean_text, first_words, one_line, search_form
from ...errors import OpenPGPError
from ..records import Indexed, MessageKind, Part
from ..searchtext import searchable, tip_words

MAX_TEXT = 100_000
MAX_REFS = 30
PREVIEW = 200  # Tip.preview column size
SYNTHETIC_DOMAIN = "sha256.mailbridge.invalid"
# Charset labels seen in real mail that Python does not know under that name.
CHARSET_ALIASES = {
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "iso-8859-8-e": "iso-8859-8",
    "windows-1258": "cp1258",
    "x-user-defined": "latin-1",
    "ks_c_5601-1987": "cp949",
    "gb2312": "gb18030",
    "unicode-1-1-utf-7": "utf-7",
}
_SUBJECT_TAG = re.compile(r"\[([A-Za-z0-9]{1,12}-\d{4,})\]")
_TAGS = re.compile(r"<[^>]*>")
_SERIOUS_DEFECTS = (
    email_errors.StartBoundaryNotFoundDefect,
    email_errors.CloseBoundaryNotFoundDefect,
    email_errors.MultipartInvariantViolationDefect,
    email_errors.NoBoundaryInMultipartDefect,
)


def preview(text: str, max_length: int = PREVIEW) -> str:
    """``first_words(text, max_length)`` of clean text, reading only a bounded prefix.

    A long body costs the same as a short one: the prefix is cut just before a
    space or newline (where neither NFC nor whitespace folding can reach across),
    and once it folds to more than ``max_length`` characters the preview of the
    whole text cannot differ from the preview of the prefix.
    """
    limit = max_length + 16
    while limit < len(text):
        cut = min((i for i in (text.find(" ", limit), text.find("\n", limit)) if i >= 0),
                  default=-1)
        if cut < 0:
            break
        head = one_line(text[:cut])
        if len(head) > max_length:
            return first_words(head, max_length=max_length)
        limit = 2 * cut + 1
    return first_words(text, max_length=max_length)


def decode_bytes(data: bytes, charset: str | None) -> tuple[str, str]:
    """Decode *data* declared as *charset*; return (text, problem or "")."""
    label = (charset or "us-ascii").strip().strip('"').lower()
    name = CHARSET_ALIASES.get(label, label)
    problem = ""
    try:
        codecs.lookup(name)
    except LookupError:
        problem, name = f"unknown charset {label!r}", ""
    if name:
        try:
            return data.decode(name), ""
        except UnicodeDecodeError:
            if name not in ("us-ascii", "ascii"):
                problem = f"bytes not valid in charset {label!r}"
    try:
        return data.decode("utf-8"), problem
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), problem or f"bytes not valid in {label!r}"


def decode_header_value(value: object) -> tuple[str, str]:
    """One header as clean NFC text: encoded-words joined, raw 8-bit bytes guessed."""
    if value is None:
        return "", ""
    text = str(value)
    if text.isascii() and "=?" not in text:
        return one_line(text), ""  # what decode_header would give, at a fraction of the cost
    problems: list[str] = []
    try:
        chunks = decode_header(text)
    except (ValueError, LookupError, email_errors.HeaderParseError):
        chunks = [(text, None)]
    out: list[str] = []
    last_encoded = False
    for chunk, charset in chunks:
        encoded = charset not in (None, "us-ascii")
        if isinstance(chunk, str):
            # Raw 8-bit header bytes arrive as surrogate escapes.
            chunk = chunk.encode("utf-8", "surrogateescape")
            charset = charset or "utf-8"
        decoded, problem = decode_bytes(chunk, charset)
        # decode_header drops the folding space between an encoded and a plain
        # word; RFC 2047 keeps it (as email.header.Header.__str__ does).
        if out and encoded != last_encoded and decoded and not (
                out[-1][-1:].isspace() or decoded[0].isspace()):
            out.append(" ")
        out.append(decoded)
        last_encoded = encoded
        if problem:
            problems.append(problem)
    return one_line("".join(out)), "; ".join(problems)


def _received_hour(value: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)


def synthetic_message_id(raw_sha256: str) -> str:
    """A stable Message-ID for mail without one: the same bytes give the same id."""
    return f"<{raw_sha256[:40]}@{SYNTHETIC_DOMAIN}>"


def _is_auto(msg: Message, headers: dict[str, str], sender: str, is_relay: bool) -> bool:
    """Auto-replies, bounces, DSNs, bulk mail and our own mail looping back."""
    auto_submitted = headers.get("auto-submitted", "").strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return True
    if headers.get("precedence", "").strip().lower() in ("bulk", "junk", "list", "auto_reply"):
        return True
    if "x-autoreply" in headers or "x-autorespond" in headers:
        return True
    return_path = headers.get("return-path")
    if return_path is not None and return_path.strip() in ("<>", ""):
        return True
    local = sender.partition("@")[0]
    if local in ("mailer-daemon", "postmaster"):
        return True
    if msg.get_content_type() == "multipart/report" or any(
            p.get_content_type() in ("message/delivery-status", "message/disposition-notification")
            for p in msg.walk()):
        return True
    return not is_relay and HEADER_LOOP.lower() in headers


def _body(msg: Message, problems: list[str]) -> tuple[str, tuple[Part, ...]]:
    """The first text/plain part (else the first text/html, stripped) and the attachments.

    An HTML alternative is decoded only when there is no plain text to use.
    """
    plain: str | None = None
    html_part: Message | None = None
    parts: list[Part] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        raw_name = part.get_filename()
        is_attachment = (raw_name is not None
                         or "attachment" in str(part.get("Content-Disposition", "")).lower())
        if ctype == "text/html" and not is_attachment:
            html_part = html_part or part
            continue
        if ctype == "text/plain" and not is_attachment and plain is not None:
            continue
        data = _payload(part, problems)
        if data is None:
            continue
        if ctype == "text/plain" and not is_attachment:
            plain = _text_of(part, data, problems)
            continue
        name, _problem = decode_header_value(raw_name or "")
        name = name.replace("/", "_").replace("\\", "_")[:255]
        parts.append(Part(name or "attachment", ctype[:127], data))
    if plain is None and html_part is not None:
        data = _payload(html_part, problems)
        if data is not None:
            plain = html.unescape(_TAGS.sub(" ", _text_of(html_part, data, problems)))
    return clean_text(plain or "", max_length=MAX_TEXT), tuple(parts)


def _payload(part: Message, problems: list[str]) -> bytes | None:
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, LookupError, AssertionError) as exc:
        problems.append(f"undecodable part {part.get_content_type()}: {type(exc).__name__}")
        return None
    return payload if isinstance(payload, bytes) else b""


def _text_of(part: Message, data: bytes, problems: list[str]) -> str:
    text, problem = decode_bytes(data, part.get_content_charset())
    if problem:
        problems.append(problem)
    return text


def _decrypted(msg: Message, decrypt: Callable[[bytes], bytes] | None) -> tuple[Message, str]:
    """The tip inside a PGP/MIME message, or *msg* and why it could not be opened."""
    armour = ciphertext(msg)
    if armour is None:
        return msg, "encrypted, but its PGP/MIME parts are malformed"
    if decrypt is None:
        return msg, ("encrypted to the station's OpenPGP key and this station cannot decrypt: "
                     "set openpgp_secret_key (with openpgp_passphrase_env) or openpgp_gnupghome")
    try:
        return email.message_from_bytes(decrypt(armour)), ""
    except (OpenPGPError, OSError, ValueError) as exc:
        return msg, f"encrypted, and it could not be decrypted: {exc}"


def index_message(raw: bytes, *, relay: RelayIdentity, size: int | None = None,
                  headers_only: bool = False,
                  decrypt: Callable[[bytes], bytes] | None = None) -> Indexed:
    """Map one raw message to what the ledger keeps. Never raises on bad mail.

    Only mail whose contract verifies against the relay's public keys is a tip or a
    follow-up. Contract headers of the wrong shape are quarantined with the
    reason; a missing or bad signature, or mail from the relay's address with
    no contract at all, is ``forged`` and never joins a thread.

    With ``headers_only`` (the message is over the size limit and only its
    header was fetched) the body is left empty and the message is a placeholder
    unless it is a relay tip, which still gets its row (its signature then
    proves the headers only).

    A tip encrypted to the station (PGP/MIME) is indexed from what *decrypt* opens,
    its real subject from the protected headers; if it cannot be opened it is
    quarantined with the reason.
    """
    digest = hashlib.sha256(raw).hexdigest()
    real_size = len(raw) if size is None else size
    problems: list[str] = []
    try:
        msg = email.message_from_bytes(raw)
    except Exception as exc:
        return Indexed(synthetic_message_id(digest), digest, real_size, MessageKind.QUARANTINED,
                       problems=(f"unparseable: {type(exc).__name__}",))
    if not headers_only:  # a header without its body always lacks the MIME parts
        problems.extend(type(d).__name__ for d in msg.defects
                        if isinstance(d, _SERIOUS_DEFECTS))

    header_lists: dict[str, list[str]] = {}
    for key, value in msg.raw_items():
        header_lists.setdefault(key.lower(), []).append(str(value))
    raw_headers = {key: values[0] for key, values in header_lists.items()}

    def header(name: str) -> str:
        value, problem = decode_header_value(raw_headers.get(name.lower()))
        if problem:
            problems.append(f"{name}: {problem}")
        return value

    subject = header("Subject")
    message_id = next(iter(message_ids(header("Message-ID"))), "")
    if "@" not in message_id or len(message_id) > 500:
        message_id = synthetic_message_id(digest)
    senders = getaddresses([header("From")])
    sender = senders[0][1].strip().lower()[:320] if senders else ""
    # Bounded to the ledger's column sizes: one hostile header must not fail a batch.
    in_reply_to = next((i for i in message_ids(header("In-Reply-To")) if len(i) <= 500), "")
    references = tuple(i for i in message_ids(header("References") + " " + in_reply_to)
                       if len(i) <= 500)[-MAX_REFS:]
    # Only a message that claims to be a tip pays for digesting its body.
    body = body_digest(msg) if has_contract(header_lists) and not headers_only else None
    checked = verify_contract(header_lists, body, relay.public_keys)
    from_relay = sender == relay.address.strip().lower()
    contract = checked.contract if from_relay else None
    if checked.malformed:
        problems.append(f"contract header: {checked.problem}")
    unopened = ""
    if contract is not None and not headers_only and is_encrypted(msg):
        msg, unopened = _decrypted(msg, decrypt)
        if unopened:
            problems.append(unopened)
        elif msg["Subject"] is not None:
            subject = decode_header_value(msg["Subject"])[0]
    text, attachments = ("", ()) if headers_only or unopened else _body(msg, problems)
    base = Indexed(
        message_id=message_id, raw_sha256=digest, size=real_size, kind=MessageKind.OTHER,
        subject=subject, text_body=text, sender=sender,
        received_hour=_received_hour(header("Date")), in_reply_to=in_reply_to,
        references=references, attachments=attachments, problems=tuple(problems),
    )
    # Before the auto-reply rules: a forgery copies our loop header too.
    if checked.malformed or unopened:
        return replace(base, kind=MessageKind.QUARANTINED)
    if checked.problem or (not checked.present and from_relay):
        why = checked.problem or "it has the relay's address but no contract headers"
        return replace(base, kind=MessageKind.FORGED, warning=f"not from the relay: {why}")
    if _is_auto(msg, raw_headers, sender, contract is not None):
        return replace(base, kind=MessageKind.AUTO)
    if contract is not None:
        tip_text = tip_words(text)
        return replace(
            base, kind=MessageKind.FOLLOWUP if references else MessageKind.TIP,
            ref=contract.ref[:32], category=contract.category_id, placement=contract.placement_id,
            contract_station=contract.station_id, likely_spam=contract.likely_spam,
            tip_text=tip_text, preview=preview(tip_text),
            search_text=search_form(tip_text),
            warning="too large: only the header was indexed" if headers_only else "")
    tag = _SUBJECT_TAG.search(subject)
    ref = tag.group(1).upper() if tag and is_ref(tag.group(1).upper()) else ""
    return replace(base, kind=MessageKind.PLACEHOLDER if headers_only else MessageKind.OTHER,
                   ref=ref[:32], search_text=searchable(False, text))
