"""Text hygiene shared by the relay and the station side (pure, no I/O).

Everything a tipster types, and everything read back from a mailbox, passes
through here before it reaches a header, a database row or a terminal. The
rules are deliberately blunt: NFC, no control characters except newline and
tab, no bidirectional overrides, no escape sequences, bounded length.
"""

from __future__ import annotations

import re
import unicodedata

# C0 and C1 controls (incl. ESC, CSI 0x9b) except TAB and LF; DEL.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Bidirectional embeddings, overrides and isolates can disguise text (Trojan Source).
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
# Whole ANSI/VT sequences, so their printable tail ("[31m") does not survive.
_ANSI = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])"
    r"|\x9b[0-?]*[ -/]*[@-~]"
)
# CRLF and every other line break Unicode knows (CR, NEL, LS, PS, VT, FF) become "\n".
_NEWLINES = re.compile("\r\n?|[\x85\u2028\u2029\x0b\x0c]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")
# Any character one of the four patterns above starts with: text without one is
# already clean but for NFC, and one search is cheaper than four substitutions.
_SUSPECT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                      "\u200e\u200f\u061c]")


def clean_text(value: str, *, max_length: int | None = None) -> str:
    """Return *value* NFC-normalised, with escapes, controls and bidi marks removed.

    Newlines are normalised to ``\\n``; tabs are kept. Used for multi-line
    fields such as the tip text.
    """
    if _SUSPECT.search(value):
        value = _NEWLINES.sub("\n", value)
        value = _ANSI.sub("", value)
        value = _CONTROLS.sub("", value)
        value = _BIDI.sub("", value)
    value = unicodedata.normalize("NFC", value).strip()
    if max_length is not None:
        value = value[:max_length]
    return value


def one_line(value: str, *, max_length: int | None = None) -> str:
    """Return *value* cleaned and folded to one line: safe in a header or a list row."""
    value = clean_text(value).replace("\n", " ")
    value = _SPACES.sub(" ", value).strip()
    if max_length is not None and len(value) > max_length:
        value = value[: max_length - 1].rstrip() + "…"
    return value


def first_words(value: str, *, max_length: int = 60) -> str:
    """A one-line preview ending on a word boundary, for subjects and list rows."""
    line = one_line(value)
    if len(line) <= max_length:
        return line
    cut = line[: max_length - 1]
    if " " in cut[max_length // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,.;:-") + "…"


# Combining marks left by NFD: every Vietnamese tone and vowel mark is among them.
_MARKS = re.compile("[\u0300-\u036f]")


def search_form(value: str) -> str:
    """*value* as the search index and its queries hold it: no diacritics, đ read as d,
    case folded. So "duong mon" finds "đường mòn", as officers type without a keyboard
    layout for Vietnamese."""
    value = value.replace("đ", "d").replace("Đ", "d")
    return _MARKS.sub("", unicodedata.normalize("NFD", value)).casefold()


_PASSWORD = re.compile(r"(://[^/?#@:\s]*:)[^@/?#\s]*@")


def mask_passwords(text: str) -> str:
    """*text* with the password of every ``scheme://user:password@`` in it replaced,
    so a URL in an error or a log line never shows it."""
    return _PASSWORD.sub(r"\1***@", text)


_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def is_slug(value: str) -> bool:
    """True for a short lower-case ASCII id (station, placement, category)."""
    return bool(_SLUG.match(value))
