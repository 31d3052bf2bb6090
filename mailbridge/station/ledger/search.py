"""Full-text search over tip threads: FTS5 on SQLite, ``tsvector`` on PostgreSQL.

Both index ``messages.search_text`` (revision ``0003_search_text``): the words
people wrote, folded (no diacritics, đ read as d), never the relay's template or
quoted text, so a search finds a tip by its own text, its follow-ups and officers'
replies; notes are matched too. What an officer types is folded the same way and is
never passed through as query syntax: it is cut into words, each quoted, the last
one matched as a prefix (search as you type).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Select,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
    union_all,
)
from sqlalchemy.orm import Session, aliased

from ...core.text import search_form
from .models import LIST_ORDER, Message, Note, Tip

# Must stay identical to the expression indexed in migrations/versions/0003_search_text.py.
PG_DOCUMENT = ("to_tsvector('simple'::regconfig, left(coalesce(messages.search_text, ''), "
               "100000))")
MAX_WORDS = 8
_WORD = re.compile(r"\w+", re.UNICODE)
_REF = re.compile(r"^[A-Za-z0-9]{1,12}-\d+$")


def words(query: str) -> list[str]:
    """The searchable words of *query*, folded as the index is, at most ``MAX_WORDS``."""
    return _WORD.findall(search_form(query))[:MAX_WORDS]


def fts5_query(query: str) -> str:
    """An FTS5 MATCH expression: every word required, the last one as a prefix."""
    terms = ['"' + w.replace('"', '""') + '"' for w in words(query)]
    if terms:
        terms[-1] += "*"
    return " ".join(terms)


def tsquery(query: str) -> str:
    """A ``to_tsquery('simple', ...)`` expression: words ANDed, the last as a prefix."""
    terms = [w.lower() for w in words(query)]
    if terms:
        terms[-1] += ":*"
    return " & ".join(terms)


def _fts_hits(query: str) -> Select[Any]:
    """Message ids whose text matches *query* in the SQLite FTS5 index."""
    return select(literal_column("rowid", type_=Message.id.type)).select_from(
        table("messages_fts")).where(
        text("messages_fts MATCH :fts").bindparams(fts=fts5_query(query)))


def matching_messages(dialect: str, query: str) -> Select[Any] | None:
    """Ids of messages whose subject or body matches *query*; None when no word."""
    if not words(query):
        return None
    if dialect == "sqlite":
        return _fts_hits(query)
    if dialect == "postgresql":
        return select(Message.id).where(
            text(f"{PG_DOCUMENT} @@ to_tsquery('simple'::regconfig, :tsq)")
            .bindparams(tsq=tsquery(query)))
    return select(Message.id).where(or_(*(
        Message.search_text.like(f"%{w}%") for w in words(query))))


def _noted(query: str) -> Select[Any]:
    """Ids of tips with a note that holds every word of *query*."""
    return select(Note.tip_id).where(*(Note.search_text.contains(w, autoescape=True)
                                       for w in words(query)))


def tip_condition(dialect: str, query: str) -> ColumnElement[bool] | None:
    """A WHERE clause on ``Tip``: its ref when *query* is one, else its thread's text.

    One subquery of tip ids (the FTS match runs once). SQLite compares it with
    ``tips.id + 0`` so that it reads the list's index newest first and stops at
    the page: a common word's first page then costs 56 ms instead of 89 ms on
    100k tips (sorting every match), a rare word's 14 ms. PostgreSQL plans that
    itself.
    """
    ref = query.strip()
    if _REF.match(ref):
        return Tip.ref == ref.upper()
    hits = matching_messages(dialect, query)
    if hits is None:
        return None
    owner = aliased(Tip)
    tip_ids = (select(func.coalesce(Message.tip_id, owner.id))
               .select_from(Message).outerjoin(owner, owner.message_pk == Message.id)
               .where(Message.id.in_(hits)))
    key = Tip.id + 0 if dialect == "sqlite" else Tip.id
    return or_(key.in_(tip_ids), key.in_(_noted(query)))


def among_condition(query: str, head: CTE) -> ColumnElement[bool] | None:
    """``tip_condition`` on SQLite for the tips of *head* only (a CTE of their ``id``),
    or None when *query* is a ref or has no word.

    The FTS rows read are those between the lowest and the highest id of the head's
    messages (its tips' own and their threads'), not every match: the list of a word
    in half of 100,000 tips is what made its first page cost 56 ms (``page_tips``).
    """
    if _REF.match(query.strip()) or not words(query):
        return None
    ids = select(head.c.id)
    thread = union_all(
        select(Message.id.label("mid"), Message.tip_id.label("tid")).where(
            Message.tip_id.in_(ids)),
        select(Tip.message_pk, Tip.id).where(Tip.id.in_(ids))).cte("thread")
    rowid = literal_column("rowid", type_=Message.id.type)
    hits = _fts_hits(query).where(rowid.between(select(func.min(thread.c.mid)).scalar_subquery(),
                                                select(func.max(thread.c.mid)).scalar_subquery()))
    return or_(Tip.id.in_(select(thread.c.tid).where(thread.c.mid.in_(hits))),
               Tip.id.in_(_noted(query)))


def search_tip_ids(session: Session, query: str, limit: int = 1000) -> list[int]:
    """Tip ids matching *query*, newest first (for tests and scripts)."""
    cond = tip_condition(session.get_bind().dialect.name, query)
    if cond is None:
        return []
    rows = session.scalars(select(Tip.id).where(cond).order_by(*LIST_ORDER).limit(limit))
    return list(rows)
