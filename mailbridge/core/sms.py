"""A text message as gammu-smsd hands it over, read into a tip's text (pure, no I/O).

gammu-smsd runs ``RunOnReceive`` with the message in the environment:
``SMS_MESSAGES`` parts, each ``SMS_n_TEXT`` / ``SMS_n_NUMBER`` / ``SMS_n_CLASS`` /
``SMS_n_REFERENCE``, in order, and for a concatenated or binary message
``DECODED_PARTS`` with ``DECODED_n_TEXT`` or ``DECODED_n_MMS_*``. Only plain text
becomes a tip: a part without text (8-bit data, a WAP push), an MMS notification, a
flash message (class 0) or a delivery report (the only kind with a message
reference; a received message has none) is refused, and so is an empty one.

The sender's number is read here only to be handed to the rate limiter as digits
(``number_key``); it is never part of what this module returns as a tip.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .text import clean_text, search_form

# What a refusal names: never the text, never the number.
EMPTY, BINARY, FLASH, REPORT, MALFORMED = "empty", "binary", "flash", "delivery report", "malformed"
MAX_PARTS = 255  # a concatenated SMS has at most 255 parts (one octet in its header)
_WORD_END = re.compile(r"[\s.,:;!?)\-–]|$")
_SPACES = re.compile(r"\s+")


class SmsRefused(Exception):
    """The message is not a tip; ``kind`` says why (one of the constants above)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True)
class Sms:
    """A received text: its words (NFC, cleaned), the sender's number as digits for the
    limiter, and as gammu gave it, for an acknowledgement only."""

    text: str
    number_key: str
    reply_number: str = ""

    def __repr__(self) -> str:  # a traceback or a debug print never shows the number
        return f"Sms(text=<{len(self.text)} characters>)"


def read_sms(env: Mapping[str, str], *, max_chars: int) -> Sms:
    """The tip text of the message in *env* (gammu-smsd's RunOnReceive environment),
    its parts joined in order; raise ``SmsRefused`` for anything that is not a text."""
    count = env.get("SMS_MESSAGES", "")
    if not (count.isascii() and count.isdigit() and 0 < int(count) <= MAX_PARTS):
        raise SmsRefused(MALFORMED)
    parts = range(1, int(count) + 1)
    if any(env.get(f"SMS_{n}_REFERENCE", "0").strip() not in ("", "0") for n in parts):
        raise SmsRefused(REPORT)
    if any(key.startswith("DECODED_") and "_MMS_" in key for key in env):
        raise SmsRefused(BINARY)
    if any(f"SMS_{n}_TEXT" not in env for n in parts):
        raise SmsRefused(BINARY)
    if any(env.get(f"SMS_{n}_CLASS", "-1").strip() == "0" for n in parts):
        raise SmsRefused(FLASH)
    # gammu splits a concatenated text anywhere, mid-word too: the parts join as they are.
    text = clean_text(_readable("".join(env[f"SMS_{n}_TEXT"] for n in parts)),
                      max_length=max_chars)
    if not text:
        raise SmsRefused(EMPTY)
    number = env.get("SMS_1_NUMBER", "").strip()
    return Sms(text, number_key(number), number)


def _readable(value: str) -> str:
    """Undecodable bytes (``os.environ`` keeps them as surrogates) as U+FFFD."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def number_key(number: str, country: str = "84") -> str:
    """One spelling of a number for the rate limiter: +84 912…, 0912… and 84912…
    are the same phone. Digits only; a sender name (an operator's "VIETTEL") as itself."""
    digits = "".join(c for c in number if c.isascii() and c.isdigit())
    if not digits:
        return number.strip().casefold()
    if number.strip().startswith("+") or number.strip().startswith("00"):
        return digits.removeprefix("00")
    if digits.startswith("0"):
        return country + digits[1:]
    return digits


def fold_keyword(value: str) -> str:
    """A keyword as it is matched: no diacritics, đ as d, case and spaces folded, so
    "Ma túy", "ma tuy" and "MA  TUY" are one."""
    return _SPACES.sub(" ", search_form(value)).strip()


def category_of(text: str, keywords: Mapping[str, str], default: str) -> str:
    """The category a text starts with: its longest leading keyword (folded, see
    ``fold_keyword``) followed by a space, a punctuation mark or the end; else *default*.
    "1 có người…", "1. …", "ma túy: …" and "MA TUY …" all name the same one."""
    folded = fold_keyword(text)
    for keyword in sorted(keywords, key=len, reverse=True):
        if folded.startswith(keyword) and _WORD_END.match(folded, len(keyword)):
            return keywords[keyword]
    return default
