"""What the tipster may read of an officer's reply: the new text only (pure, no I/O).

An officer answers from the mail client he already uses, so the mail holds far
more than his answer: the tip quoted back, his signature, his name and address,
the client's headers. ``reply_text`` keeps the text he wrote above the quote and
nothing else. The splitting is mail-parser-reply's (quote headers of Gmail,
Outlook, Thunderbird, Apple Mail and Zimbra in many languages, signatures,
disclaimers); Vietnamese, which it lacks, is registered here in its own table
format. HTML-only replies are turned into text with BeautifulSoup after the
quoted blocks the clients mark (``blockquote``, ``gmail_quote``, Outlook's
``divRplyFwdMsg``) and marked signatures are removed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from email.message import Message
from typing import Any

from bs4 import BeautifulSoup, Tag
from mailparser_reply import constants as _reply_constants
from mailparser_reply.parser import EmailMessage as _ParsedMail

from .message import HEADER_LOOP, LOOP_VALUE, has_contract
from .text import clean_text

MAX_REPLY = 5000
# The parser's patterns cost the square of a line's length (a 2,000-character line of
# "On On On …" took 0.35 s, a 100 KB one minutes), and anyone can send mail. So it reads
# only what can still be kept (the new text stands first, and is cut at MAX_REPLY) and
# never a long line: no quote header is that long, so such a line is parked and put back.
_MAX_PARSED = MAX_REPLY + 1000
_LONG_LINE = 200
_MAX_HTML = 256 * 1024
_PARKED = re.compile("\x00(\\d+)\x00")

_Q = _reply_constants.QUOTED_MATCH_INCLUDE
# Vietnamese as mail clients write it (Gmail, Apple Mail, Thunderbird: "Vào <date>,
# <name> <addr> đã viết:", wrapped onto two lines when long; Outlook's header block
# "Từ: / Đã gửi: / Đến: / Chủ đề:"; Zimbra's "----- Thư gốc -----"), and the
# closings officers sign with.
_reply_constants.MAIL_LANGUAGES.setdefault("vi", {
    "wrote_header": r"^(" + _Q + r"Vào\s(?:.+?\s?.+?)\s?đã viết\s?:)$",
    "from_header": (r"((?:(?:^|\n|\n" + _Q + r")[* ]*(?:Từ|Đã gửi|Ngày gửi|Gửi|Đến|Tới|"
                    r"Chủ đề|Ngày|Cc|Bcc):[ *]*(?:\s{,2}).*){2,}(?:\n.*){,1})"),
    "disclaimers": [r"Lưu ý:", r"Thông báo bảo mật:"],
    # Closings only: "Cảm ơn," opens many an answer and must not cut it.
    "signatures": ["Trân trọng", "Thân ái", "Thân mến", "Kính thư"],
    "sent_from": "Gửi từ|Được gửi từ",
})
_LANGUAGES = ["vi", "en"]
_SEPARATORS = re.compile(r"^-{2,} ?(?:Thư gốc|Tin nhắn gốc|Original Message|Forwarded message|"
                         r"Thư chuyển tiếp) ?-{2,}$.*", re.IGNORECASE | re.MULTILINE | re.DOTALL)
_QUOTED_LINE = re.compile(r"^[ \t]*>.*$\n?", re.MULTILINE)
_ADDRESS = re.compile(r"(?:mailto:)?[\w.+%-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
_BLANK_RUNS = re.compile(r"\n{3,}")
# What mail clients put in HTML around the quote and the signature.
_HTML_DROP = ("blockquote", ".gmail_quote", ".gmail_signature", ".gmail_attr",
              ".moz-cite-prefix", ".moz-signature", "#divRplyFwdMsg", "#appendonsend",
              "#Signature", ".zmail_extra", "head", "style", "script", "title")
_REPORTS = ("multipart/report", "message/delivery-status", "message/disposition-notification")
_HTML_BLOCKS = ("p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "pre")


def html_to_text(page: str) -> str:
    """The visible text of an HTML reply, without what the client marked as quote or
    signature; Outlook's reply header and everything after it go too."""
    soup = BeautifulSoup(page[:_MAX_HTML], "html.parser")  # the new text comes first
    for anchor in soup.select("#divRplyFwdMsg, #appendonsend"):
        for later in list(anchor.find_all_next()):
            later.decompose()
    for found in soup.select(", ".join(_HTML_DROP)):
        if not found.decomposed:
            found.decompose()
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for block in soup.find_all(_HTML_BLOCKS):
        if isinstance(block, Tag):
            block.append("\n")
    return soup.get_text()


def unflow(text: str, *, delsp: bool = False) -> str:
    """RFC 3676 ``format=flowed`` (Thunderbird, Apple Mail) back to its paragraphs: a
    line ending in a space goes on with the next one, and a phone shows one paragraph,
    not lines cut at 72 characters. Quoted lines are left to the parser."""
    out: list[str] = []
    joining = False
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.startswith(">"):
            line = line.removeprefix(" ")  # space-stuffing
        flowed = line.endswith(" ") and line != "-- " and not line.startswith(">")
        if flowed and delsp:
            line = line[:-1]
        if joining:
            out[-1] += line
        else:
            out.append(line)
        joining = flowed
    return "\n".join(out)


def _body_part(msg: Message) -> tuple[str, str] | None:
    """(subtype, text) of the first inline text/plain part, else of the first text/html."""
    found: dict[str, str] = {}
    for part in msg.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        subtype = part.get_content_subtype() if part.get_content_maintype() == "text" else ""
        if subtype in ("plain", "html") and subtype not in found:
            payload: Any = part.get_payload(decode=True)
            charset = part.get_content_charset() or "utf-8"
            try:
                found[subtype] = bytes(payload or b"").decode(charset, "replace")
            except LookupError:  # a charset Python does not know
                found[subtype] = bytes(payload or b"").decode("utf-8", "replace")
            if subtype == "plain" and str(part.get_param("format", "")).lower() == "flowed":
                found[subtype] = unflow(found[subtype],
                                        delsp=str(part.get_param("delsp", "")).lower() == "yes")
    for subtype in ("plain", "html"):
        if subtype in found:
            return subtype, found[subtype]
    return None


def new_text(text: str, *, remove: Iterable[str] = ()) -> str:
    """The officer's own words in a plain-text reply body.

    The parser's first fragment is what stands above the first quote header,
    without signature and disclaimers; left-over ``>`` lines, separators, e-mail
    addresses and each string in *remove* (the sender's name and address) go too.
    """
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\x00", ""))
    parked: list[str] = []

    def park(line: str) -> str:
        if len(line) <= _LONG_LINE:
            return line
        parked.append(line)
        return f"\x00{len(parked) - 1}\x00"

    text = "\n".join(park(line) for line in text[:_MAX_PARSED].split("\n"))
    mail = _ParsedMail(text=text, languages=list(_LANGUAGES), keep_hyphen_lists=True).read()
    kept = mail.replies[0].body if mail.replies else ""
    kept = _PARKED.sub(lambda m: parked[int(m.group(1))], kept)
    kept = _SEPARATORS.sub("", kept)
    kept = _QUOTED_LINE.sub("", kept)
    for value in remove:
        if len(value.strip()) >= 3:
            kept = re.sub(re.escape(value.strip()), "", kept, flags=re.IGNORECASE)
    kept = _ADDRESS.sub("", kept)
    kept = _BLANK_RUNS.sub("\n\n", "\n".join(line.rstrip() for line in kept.split("\n")))
    return clean_text(kept, max_length=MAX_REPLY)


def reply_text(msg: Message, *, remove: Iterable[str] = ()) -> str:
    """What the tipster reads of the reply *msg*: its new text, "" when it has none.

    No header reaches it; an HTML-only reply is converted to text first.
    """
    found = _body_part(msg)
    if found is None:
        return ""
    subtype, body = found
    return new_text(html_to_text(body) if subtype == "html" else body, remove=remove)


def noise(msg: Message, mail_from: str) -> str:
    """Why *msg* is automatic mail that must never become a reply or a tip ("" if it
    is not): answering it could start a mail loop. The reason names a kind, no content."""
    auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
    if auto and not auto.startswith("no"):
        return "Auto-Submitted"
    if str(msg.get("Precedence", "")).strip().lower() in ("bulk", "junk", "list"):
        return "Precedence"
    if any(part.get_content_type() in _REPORTS for part in msg.walk()):
        return "delivery report"
    if mail_from.strip().strip("<>") == "" or str(msg.get("Return-Path", "")).strip() == "<>":
        return "null sender"
    if any(str(value).strip().lower() == LOOP_VALUE for value in msg.get_all(HEADER_LOOP, [])):
        return "loop header"
    if has_contract(_Lists(msg)):  # our own tip coming back (a forward rule, a bounce)
        return "a message of our own"
    return ""


class _Lists:
    """A message's headers as ``verify_contract`` reads them: every value, by name."""

    def __init__(self, msg: Message) -> None:
        self.msg = msg

    def get(self, name: str, /) -> list[str] | None:
        return [str(v) for v in self.msg.get_all(name, [])] or None
