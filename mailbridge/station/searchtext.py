"""What the officers' search indexes of a message: the words people wrote (pure).

Not the relay's template (the label rows above a tip, the footer below it) and not
text quoted from an earlier message, or every tip would match "người", "biên" or
its first category through them; and no subject, which repeats the category.
Everything is held in ``search_form`` (no diacritics, đ read as d, case folded).
"""

from __future__ import annotations

import re

from ..core.text import search_form

# Where a mail client starts quoting: "On … wrote:", "Vào … đã viết:", Outlook's
# header block; from there on the text is someone else's (our own tip, usually).
_QUOTE_START = re.compile(
    r"^(?:On .{0,200} wrote:|Vào .{0,200} đã viết:|-----\s*Original Message\s*-----"
    r"|-----\s*Thư gốc\s*-----|From: .{0,200}|Từ: .{0,200})\s*$",
    re.MULTILINE | re.IGNORECASE)


def tip_words(body: str) -> str:
    """The tipster's words in a forwarded tip: after the label rows, before the footer."""
    _rows, _sep, rest = body.partition("\n\n")
    return rest.partition("\n-- \n")[0].strip() or body


def own_words(body: str) -> str:
    """A reply's own text: before the first quotation header, without ``>`` lines and
    without the signature."""
    start = _QUOTE_START.search(body)
    body = body[: start.start()] if start else body
    body = body.partition("\n-- \n")[0]
    own = (line for line in body.splitlines() if not line.lstrip().startswith(">"))
    return "\n".join(own).strip()


def searchable(is_relay: bool, body: str) -> str:
    """The search text of a message: a tip's or follow-up's own words, else its own."""
    return search_form(tip_words(body) if is_relay else own_words(body))
