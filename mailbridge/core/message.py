"""The forwarded-message contract: Submission -> signed bytes, and checking it back.

The builder and the parser of every ``X-Mailbridge-*`` header live in this one
file so the relay and the station side cannot drift apart. The message is
built from an allow-list of fields: nothing of the incoming request (address,
headers, cookies, exact time) is ever copied into it.

Tamper-proof in two ways:

- No tipster text can become a header line. Every value is folded to one line and
  loses the ``=?`` that starts an RFC 2047 encoded word (the email package would
  decode one, CRLF included, and write it back out as real header lines), and
  ``compose`` parses its own bytes back and refuses them unless the header set is
  exactly the one it meant to write.
- The relay signs what the station side files a tip by (``X-Mailbridge-Signature``,
  Ed25519): ref, station, category, placement, Message-ID, In-Reply-To, References
  and a digest of every body part. The station side holds only the public key, so
  mail that merely looks like the relay's is never filed as a tip.
"""

from __future__ import annotations

import base64
import binascii
import email
import hashlib
import html
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import Header, decode_header, make_header
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.policy import default as default_policy
from email.utils import format_datetime
from typing import Protocol

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from .receipts import derive_key, is_ref
from .text import clean_text, first_words, is_slug, one_line

HEADER_REF = "X-Mailbridge-Ref"
HEADER_STATION = "X-Mailbridge-Station"
HEADER_CATEGORY = "X-Mailbridge-Category"
HEADER_PLACEMENT = "X-Mailbridge-Placement"
HEADER_SIGNATURE = "X-Mailbridge-Signature"
# The relay's mark on a tip that copies earlier ones (core/shingles.py); signed only
# when present, so tips signed before it existed verify as they did.
HEADER_LIKELY_SPAM = "X-Mailbridge-Likely-Spam"
NEAR_DUPLICATE = "near-duplicate"
SPAM_TAG = "[spam?]"  # in the subject of a tip marked likely spam
HEADER_LOOP = "X-Loop"
LOOP_VALUE = "mailbridge"
# Headers that make a message a tip: each may appear at most once, or it is forged.
CONTRACT_HEADERS = (HEADER_REF, HEADER_STATION, HEADER_CATEGORY, HEADER_PLACEMENT,
                    HEADER_SIGNATURE, HEADER_LIKELY_SPAM)
SIGNED_HEADERS = ("Message-ID", "In-Reply-To", "References")
# What the email package adds to the top of a message besides the builder's headers.
MIME_HEADERS = ("MIME-Version", "Content-Type")
SIGNATURE_VERSION = "1"
_SIGNING_PURPOSE = "contract-ed25519"

MAX_TEXT = 10_000
MAX_WHERE = 500
# One boundary for every tip's text/HTML pair. The station's parser (the standard
# library's) compiles a pattern for each distinct boundary it meets, a third of
# its work on a tip; a fixed one is compiled once per process. A text that
# contains it gets a random one, so a tipster cannot forge a part.
BOUNDARY = "=_mailbridge_alternative"
# A header line of at most this much beside its name's ": " needs no folding (78 the
# line's limit, RFC 5322), so a header_safe ASCII value that fits is stored as written.
_SHORT = 76


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, each header's class made once: CPython's makes
    a new class at every lookup, a fifth of ``compose``'s CPU."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._made.get(key)
        if made is None:  # two threads may both make it: either class is the same header
            made = self._made[key] = super().__getitem__(key)
        return made


# The standard library's default and SMTP policies, with the registry above.
POLICY = default_policy.clone(header_factory=_HeaderClasses())
SMTP = POLICY.clone(linesep="\r\n")


def hour_of(moment: datetime) -> datetime:
    """Truncate to the hour, in UTC: the finest time kept for anything a tipster did."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Attachment:
    """An attachment that has already been cleaned (re-encoded, renamed).

    A tip's attachments are one ordered tuple (``Submission.attachments``) that
    ``compose`` turns into MIME parts after the text, so whatever wraps them later
    (encryption) has one list to work on.
    """

    filename: str
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        """The cleaned file's SHA-256, listed in the body so its integrity can be checked."""
        return hashlib.sha256(self.data).hexdigest()


def photo(index: int, data: bytes) -> Attachment:
    """A cleaned photo under the only name it ever gets (the phone's name is never kept)."""
    return Attachment(f"anh-{index}.jpg", "image/jpeg", data)


def voice(index: int, data: bytes) -> Attachment:
    """A cleaned voice message (AAC in an M4A container), named like ``photo``."""
    return Attachment(f"ghi-am-{index}.m4a", "audio/mp4", data)


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
    likely_spam: str = ""  # NEAR_DUPLICATE when the relay saw many copies of the text


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


def header_safe(value: str, *, max_length: int | None = None) -> str:
    """*value* as one header line no decoder can turn into more: no line break of any
    kind and no ``=?`` (the start of an encoded word), whatever the Python patch level."""
    return one_line(value, max_length=max_length).replace("=?", "= ?")


def _encoded(name: str, value: str) -> str:
    """*value* as RFC 2047 encoded words, folded by ``email.header.Header``.

    The policy's own folder (CPython 3.11) drops the space where it splits a
    non-ASCII run into two encoded words ("lạ mang" reads back "lạmang" in every
    mail client); ``Header`` encodes each space inside a word.
    """
    return Header(value, "utf-8", header_name=name).encode(linesep="\n")


def _headers(sub: Submission, env: Envelope, subject: str, now: datetime | None
             ) -> list[tuple[str, str, str | None]]:
    """Every top-level header the builder writes, in order: its name, the text it means
    and, where the policy's folding would mangle it, the form to store as it is."""
    name, mailbox = header_safe(sub.station_name, max_length=80), header_safe(sub.mailbox)
    headers: list[tuple[str, str, str | None]] = [
        ("From", str(Address(display_name="mailbridge", addr_spec=header_safe(env.relay_address))),
         None),
        # The name always encoded, whatever it holds: no quoting rules apply to it.
        ("To", f"{name} <{mailbox}>", f"{_encoded('To', name)}\n <{mailbox}>"),
        ("Reply-To", header_safe(f"reply+{env.reply_token}@{env.relay_domain}"), None),
        ("Subject", subject, None if subject.isascii() else _encoded("Subject", subject)),
        ("Date", format_datetime(now or datetime.now(UTC)), None),
        ("Message-ID", header_safe(env.message_id or new_message_id(env.relay_domain)), None),
    ]
    if env.references:
        refs = [header_safe(r) for r in env.references]
        headers += [("In-Reply-To", refs[-1], None), ("References", " ".join(refs), None)]
    headers += [(HEADER_REF, header_safe(sub.ref), None),
                (HEADER_STATION, header_safe(sub.station_id), None),
                (HEADER_CATEGORY, header_safe(sub.category_id), None)]
    if sub.placement_id:
        headers.append((HEADER_PLACEMENT, header_safe(sub.placement_id), None))
    if sub.likely_spam:
        headers.append((HEADER_LIKELY_SPAM, header_safe(sub.likely_spam), None))
    headers.append((HEADER_LOOP, LOOP_VALUE, None))
    return headers


def build_message(
    sub: Submission,
    env: Envelope,
    *,
    gettext: Callable[[str], str] = _identity,
    now: datetime | None = None,
) -> EmailMessage:
    """Build the message that lands in the station mailbox (unsigned: see ``compose``).

    Every value goes through text hygiene; header values are ``header_safe``, so
    a field cannot inject a header; the HTML part escapes everything.
    """
    return _build(sub, env, gettext, now)[0]


def _build(sub: Submission, env: Envelope, gettext: Callable[[str], str],
           now: datetime | None) -> tuple[EmailMessage, list[tuple[str, str]]]:
    """The unsigned message and the (name, meant text) of each header it carries."""
    _ = gettext
    text = clean_text(sub.text, max_length=MAX_TEXT)
    where = clean_text(sub.where_when, max_length=MAX_WHERE)
    category = header_safe(sub.category_label, max_length=80)
    placement = one_line(sub.placement_label, max_length=120)
    ref = header_safe(sub.ref)
    hour = hour_of(sub.received_hour)

    preview = first_words(text, max_length=60) or _("(no text)")
    # A fixed token like the [REF] tag, in no language: a mailbox rule can file it.
    mark = f"{SPAM_TAG} " if sub.likely_spam else ""
    headers = _headers(sub, env, header_safe(f"[{ref}] {mark}{category} — {preview}"), now)
    msg = EmailMessage(policy=POLICY)
    for name, value, folded in headers:
        if folded is None and value.isascii() and len(name) + len(value) <= _SHORT:
            folded = value  # the policy would parse it only to write it back as it is
        if folded is None:
            msg[name] = value
        else:  # stored already folded, so the generator writes it as it is
            msg.set_raw(name, folded)

    rows: list[tuple[str, str]] = [
        (_("Reference"), ref),
        (_("Category"), category),
    ]
    if placement:
        rows.append((_("Poster"), placement))
    if where:
        rows.append((_("Where / when"), where))
    rows.append((_("Received (hour, UTC)"), hour.strftime("%Y-%m-%d %H:00")))

    files = [(att.filename, att.sha256) for att in sub.attachments]
    files_title = _("Attached files (SHA-256 of each file as sent)")
    plain = "\n".join(f"{label}: {value}" for label, value in rows)
    plain += "\n\n" + (text or _("(no text)")) + "\n\n"
    if files:
        plain += files_title + ":\n" + "".join(f"{n}  {h}\n" for n, h in files) + "\n"
    plain += "-- \n"
    plain += _("Reply to this message to answer the tipster; they read it with their receipt code.")
    plain += "\n"
    msg.set_content(plain, subtype="plain", charset="utf-8")

    cells = "".join(
        f"<tr><th align=left>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
        for label, value in rows
    )
    body = html.escape(text or _("(no text)")).replace("\n", "<br>\n")
    listed = "".join(f"<li>{html.escape(n)} <code>{h}</code></li>" for n, h in files)
    listing = f"<p>{html.escape(files_title)}:</p><ul>{listed}</ul>" if files else ""
    page = (f"<!doctype html><html><body><table>{cells}</table><p>{body}</p>{listing}"
            "</body></html>\n")
    msg.add_alternative(page, subtype="html", charset="utf-8")
    if BOUNDARY not in plain + page:
        msg.set_boundary(BOUNDARY)
    for att in sub.attachments:
        maintype, _slash, subtype = att.content_type.partition("/")
        msg.add_attachment(att.data, maintype=maintype, subtype=subtype,
                           filename=header_safe(att.filename, max_length=80))
    return msg, [(name, value) for name, value, _folded in headers]


class ContractError(ValueError):
    """The relay's own message did not come out as built: it is never stored or sent."""


@dataclass(frozen=True)
class Composed:
    """A signed tip, ready for the outbox: its bytes and its Message-ID."""

    data: bytes
    message_id: str


def signing_key(secret: str) -> SigningKey:
    """The relay's Ed25519 key, derived from the installation secret (nothing to back up)."""
    return SigningKey(derive_key(secret, _SIGNING_PURPOSE))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def body_digest(msg: Message) -> str:
    """A digest of every leaf part (type, file name, decoded content), base64url.

    Decoded, so a server that re-encodes a part (8bit to quoted-printable, LF to
    CRLF) does not break it; anything that changes what a reader sees does.
    """
    digest = hashlib.sha256()
    for part in msg.walk():
        if part.is_multipart():
            continue
        try:
            payload = part.get_payload(decode=True)
        except (ValueError, LookupError, AssertionError):
            payload = b"\xff undecodable"
        data = payload if isinstance(payload, bytes) else b""
        # 7bit and 8bit data is lines (RFC 2045), whose ends the transport may change:
        # text, and the ASCII armour of an encrypted tip.
        cte = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
        if part.get_content_maintype() == "text" or cte in ("7bit", "8bit"):
            data = data.replace(b"\r\n", b"\n").rstrip(b"\n")
        label = f"{part.get_content_type()}\0{part.get_filename() or ''}\0{len(data)}\0"
        digest.update(label.encode("utf-8", "surrogateescape"))
        digest.update(data)
    return _b64(digest.digest())


def _signed_bytes(values: Mapping[str, str], body: str) -> bytes:
    fields = [f"mailbridge-contract-v{SIGNATURE_VERSION}"]
    fields += [values.get(name.lower(), "") for name in CONTRACT_HEADERS[:4] + SIGNED_HEADERS]
    if values.get(HEADER_LIKELY_SPAM.lower()):  # a body digest never holds "=" or a newline
        fields.append(f"likely-spam={values[HEADER_LIKELY_SPAM.lower()]}")
    fields.append(body)
    return "\n".join(fields).encode("utf-8")


def _signature_header(values: Mapping[str, str], body: str, key: SigningKey) -> str:
    signature = _b64(key.sign(_signed_bytes(values, body)).signature)
    # Split like DKIM's b= tag so no token is longer than a folded header line.
    return (f"v={SIGNATURE_VERSION}; k={_key_id(key.verify_key)}; b={body}; "
            f"s={signature[:43]} {signature[43:]}")


def _key_id(key: VerifyKey | bytes) -> str:
    return _b64(hashlib.sha256(bytes(key)).digest()[:6])


def compose(
    sub: Submission,
    env: Envelope,
    key: SigningKey,
    *,
    gettext: Callable[[str], str] = _identity,
    now: datetime | None = None,
    encrypt: Callable[[bytes], bytes] | None = None,
) -> Composed:
    """Build, sign and serialise a tip, then parse the bytes back and check them.

    With *encrypt* (bytes to the station's OpenPGP key, ASCII armour) the tip is
    PGP/MIME (``encrypted``): the contract is signed over the ciphertext the station
    receives. Raises ``ContractError`` unless the parsed header set is exactly the
    one written, with the intended values, and the signature verifies.
    """
    msg, headers = _build(sub, env, gettext, now)
    if encrypt is not None:
        msg, headers = encrypted(msg, headers, _visible_subject(sub), encrypt)
    values = {name.lower(): value for name, value in headers}
    signature = _signature_header(values, body_digest(msg), key)
    msg[HEADER_SIGNATURE] = signature
    headers.append((HEADER_SIGNATURE, signature))
    data = msg.as_bytes(policy=SMTP)
    parsed = email.message_from_bytes(data)  # raw headers (compat32): fast, nothing decoded
    written = [(k.lower(), _decoded(v)) for k, v in parsed.items() if k not in MIME_HEADERS]
    meant = [(k.lower(), " ".join(v.split())) for k, v in headers]
    if written != meant or [k for k in parsed if k in MIME_HEADERS] != list(MIME_HEADERS):
        raise ContractError("the message's headers did not come out as written")
    checked = verify_contract(_header_lists(parsed), body_digest(parsed),
                              [bytes(key.verify_key)])
    if checked.problem:
        raise ContractError(f"the message does not verify: {checked.problem}")
    return Composed(data, values["message-id"])


# RFC 3156: the outer message's parts; the armour never holds "=_", so one boundary fits.
PGP_ENCRYPTED = "application/pgp-encrypted"
ENCRYPTED_BOUNDARY = "=_mailbridge_encrypted"
ENCRYPTED_NAME = "encrypted.asc"
# Headers repeated inside the encrypted part (protected headers, "v1"): the reader's
# client shows these, the real subject included, once it has decrypted the tip.
PROTECTED_HEADERS = ("from", "to", "reply-to", "subject", "date", "message-id",
                     "in-reply-to", "references")


def _visible_subject(sub: Submission) -> str:
    """What the mail provider sees of an encrypted tip's subject: its ref (and the spam
    mark, so a mailbox rule still files it), never the category or the text."""
    mark = f" {SPAM_TAG}" if sub.likely_spam else ""
    return f"[{header_safe(sub.ref)}]{mark}"


def encrypted(msg: EmailMessage, headers: list[tuple[str, str]], subject: str,
              encrypt: Callable[[bytes], bytes]) -> tuple[EmailMessage, list[tuple[str, str]]]:
    """*msg* as PGP/MIME (RFC 3156): the whole MIME body, attachments included, with
    its protected headers, encrypted inside; outside, the same headers with *subject*.

    Returns the outer message (unsigned) and the (name, meant text) of its headers.
    """
    outer = EmailMessage(policy=POLICY)
    for name, value in msg.raw_items():
        lower = name.lower()
        if lower == "subject":
            outer["Subject"] = subject
        elif lower not in ("mime-version", "content-type", "content-transfer-encoding"):
            outer.set_raw(name, value)
        if lower not in PROTECTED_HEADERS and lower not in ("content-type",
                                                            "content-transfer-encoding"):
            del msg[name]
    msg.set_param("protected-headers", "v1")
    control = EmailMessage(policy=POLICY)
    control.set_content(b"Version: 1\n", "application", "pgp-encrypted", cte="7bit")
    armour = EmailMessage(policy=POLICY)
    armour.set_content(encrypt(msg.as_bytes(policy=SMTP)), "application", "octet-stream",
                       cte="7bit", disposition="inline", filename=ENCRYPTED_NAME)
    for part in (control, armour):
        del part["MIME-Version"]
    outer["MIME-Version"] = "1.0"
    outer["Content-Type"] = f'multipart/encrypted; protocol="{PGP_ENCRYPTED}"'
    outer.set_payload([control, armour])
    outer.set_boundary(ENCRYPTED_BOUNDARY)
    return outer, [(n, subject if n == "Subject" else v) for n, v in headers]


def is_encrypted(msg: Message) -> bool:
    """Whether *msg* is PGP/MIME (``multipart/encrypted`` with the OpenPGP protocol)."""
    return (msg.get_content_type() == "multipart/encrypted"
            and str(msg.get_param("protocol", "")).lower() == PGP_ENCRYPTED)


def ciphertext(msg: Message) -> bytes | None:
    """The ASCII armour of a PGP/MIME message (its second part), or None if malformed."""
    parts = msg.get_payload()
    if not is_encrypted(msg) or not isinstance(parts, list) or len(parts) != 2:
        return None
    control, armour = parts
    if not isinstance(control, Message) or control.get_content_type() != PGP_ENCRYPTED:
        return None
    data = armour.get_payload(decode=True) if isinstance(armour, Message) else None
    return data if isinstance(data, bytes) and data else None


def _decoded(value: object) -> str:
    """A raw header value as a reader decodes it (RFC 2047), whitespace folded."""
    return " ".join(str(make_header(decode_header(str(value)))).split())


def _header_lists(msg: Message) -> dict[str, list[str]]:
    lists: dict[str, list[str]] = {}
    for name, value in msg.items():
        lists.setdefault(name.lower(), []).append(str(value))
    return lists


@dataclass(frozen=True)
class ContractHeaders:
    """What the station side reads back from a forwarded message's headers."""

    ref: str
    station_id: str
    category_id: str
    placement_id: str
    message_id: str
    references: tuple[str, ...]
    likely_spam: str = ""  # NEAR_DUPLICATE, signed by the relay, or ""


@dataclass(frozen=True)
class Checked:
    """The verdict on a message's contract: authentic headers, or why not.

    ``present`` is False for ordinary mail (no contract header at all); then
    ``problem`` is empty. ``malformed`` marks headers of the wrong shape (a
    broken relay or a hand-made look-alike), as opposed to a bad signature.
    """

    present: bool
    contract: ContractHeaders | None = None
    problem: str = ""
    malformed: bool = False


class Headers(Protocol):
    """A message's headers by lower-case name, every occurrence in order."""

    def get(self, name: str, /) -> list[str] | None: ...


_TAG = re.compile(r"\s*([a-z]+)\s*=\s*([^;]*);?")


def _signature_tags(value: str) -> dict[str, str]:
    return {m.group(1): "".join(m.group(2).split()) for m in _TAG.finditer(value)}


@dataclass(frozen=True)
class RelayIdentity:
    """What the station side knows of the relay: its address and its public keys
    (raw 32-byte Ed25519 keys, several while a key is being replaced)."""

    address: str
    public_keys: tuple[bytes, ...]


def has_contract(headers: Headers) -> bool:
    """Whether any contract header is present (else the message is ordinary mail)."""
    return any(headers.get(name.lower()) for name in CONTRACT_HEADERS)


def verify_contract(headers: Headers, body: str | None, keys: Sequence[bytes]) -> Checked:
    """Check the ``X-Mailbridge-*`` headers and their signature against *keys*.

    *body* is ``body_digest`` of the message, or None when only its header was
    fetched (then the signature still proves the headers, not the body). Ids
    match case-insensitively, as the design promises; any contract header that
    appears twice makes the message forged.
    """
    lists = {name.lower(): headers.get(name.lower()) or [] for name in
             CONTRACT_HEADERS + SIGNED_HEADERS}
    if not has_contract(headers):
        return Checked(present=False)
    twice = [name for name in CONTRACT_HEADERS + SIGNED_HEADERS if len(lists[name.lower()]) > 1]
    if twice:
        return Checked(True, problem=f"{twice[0]} appears more than once")
    values = {name: one_line(found[0]) if found else "" for name, found in lists.items()}
    ref = values[HEADER_REF.lower()].upper()
    station = values[HEADER_STATION.lower()].lower()
    category = values[HEADER_CATEGORY.lower()].lower()
    placement = values[HEADER_PLACEMENT.lower()].lower()
    spam = values[HEADER_LIKELY_SPAM.lower()].lower()
    for name, value, ok in ((HEADER_REF, ref, is_ref(ref)), (HEADER_STATION, station,
                            is_slug(station)), (HEADER_CATEGORY, category, is_slug(category)),
                            (HEADER_PLACEMENT, placement, not placement or is_slug(placement)),
                            (HEADER_LIKELY_SPAM, spam, spam in ("", NEAR_DUPLICATE))):
        if not ok:
            return Checked(True, problem=f"{name} is malformed: {value[:40]!r}", malformed=True)
    tags = _signature_tags(values[HEADER_SIGNATURE.lower()])
    if not tags:
        return Checked(True, problem="it is not signed by the relay")
    problem = _signature_problem(tags, values, body, keys)
    if problem:
        return Checked(True, problem=problem)
    return Checked(True, ContractHeaders(
        ref=ref, station_id=station, category_id=category, placement_id=placement,
        message_id=values["message-id"],
        references=message_ids(values["references"] + " " + values["in-reply-to"]),
        likely_spam=spam))


def _signature_problem(tags: Mapping[str, str], values: Mapping[str, str], body: str | None,
                       keys: Sequence[bytes]) -> str:
    if tags.get("v") != SIGNATURE_VERSION:
        return f"signature version {tags.get('v', '')[:8]!r} is unknown"
    key = next((VerifyKey(k) for k in keys if _key_id(k) == tags.get("k")), None)
    if key is None:
        return "it is signed by a key this station does not trust (ledger.relay_public_keys)"
    if body is not None and tags.get("b") != body:
        return "its body was changed after the relay signed it"
    try:
        signature = base64.urlsafe_b64decode(tags.get("s", "") + "==")
        key.verify(_signed_bytes(values, tags.get("b", "")), signature)
    except (binascii.Error, ValueError, BadSignatureError, CryptoError):
        return "its signature does not match its headers"
    return ""


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
