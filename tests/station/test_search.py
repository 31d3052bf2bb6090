"""The officers' search reads what people wrote: the tipster's words, officers' own
reply text and notes, folded so "duong mon" finds "đường mòn"; never the relay's
template, the subject's category or text quoted from the tip (SQLite and PostgreSQL)."""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbridge.core.text import search_form
from mailbridge.station.ledger import workflow
from mailbridge.station.ledger.models import Message, Tip
from mailbridge.station.ledger.search import search_tip_ids
from mailbridge.station.poller.maildir import MaildirPoller
from mailbridge.station.searchtext import own_words, tip_words
from mailbridge.station.tui.data import TipFilter, page_tips
from tests.station.poller_helpers import RELAY_ID, Ledger, plain, tip

STATION = "station@example.test"
TEXT = "Có người lạ mang hàng qua đường mòn lúc nửa đêm"
QUOTING_REPLY = """Cảm ơn bà con, đồn đã nhận tin.

Vào Th 2, 2 thg 11, 2026 lúc 09:00 mailbridge <tips@relay.example.test> đã viết:
> Reference: NCS-0001
> Category: Vượt biên
>
> Có người lạ mang hàng qua đường mòn lúc nửa đêm
--\x20
Đồn Biên phòng Nậm Cha
"""


@pytest.fixture
def ledger(any_ledger: Ledger) -> Ledger:
    return any_ledger


def test_search_finds_what_people_wrote_and_not_the_template(ledger: Ledger,
                                                             tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(tip("NCS-0001", TEXT, message_id="<t1@relay.example.test>"))
    box.add(tip("NCS-0002", "Trâu bị mất ở nương ngô"))
    box.add(plain("Re: [NCS-0001] Vượt biên — Có người lạ", QUOTING_REPLY, sender=STATION,
                  headers={"In-Reply-To": "<t1@relay.example.test>"}))
    poller = MaildirPoller(tmp_path / "Maildir", ledger.store, relay=RELAY_ID,
                           max_message_bytes=10**6)
    counts = poller.poll()
    assert (counts.tips, counts.replies) == (2, 1)
    with ledger.sessions() as s:
        first = next(t for t in s.scalars(select(Tip)) if t.ref == "NCS-0001")
        workflow.add_note(s, first.id, "Đã báo đồn trưởng Điện", actor="Lan")
        s.commit()

        def found(query: str) -> list[str]:
            refs = {t.id: t.ref for t in s.scalars(select(Tip))}
            return sorted(refs[i] for i in search_tip_ids(s, query))

        assert found("duong mon") == found("đường mòn") == ["NCS-0001"]  # đ is d
        assert found("DUONG MÒN") == ["NCS-0001"]
        assert found("nuong ngo") == ["NCS-0002"]
        assert found("da nhan tin") == ["NCS-0001"]  # the officer's own reply text
        assert found("don truong dien") == ["NCS-0001"]  # a note
        # Template, subject and quoted text are not indexed: the category label, the
        # row labels, the relay's footer, and the station's signature.
        for boilerplate in ("vuot bien", "Category", "Reference", "reply to this message",
                            "receipt code", "Nam Cha", "mailbridge"):
            assert found(boilerplate) == [], boilerplate
        reply = s.scalars(select(Message).where(Message.kind == "reply")).first()
        assert reply is not None and "vuot bien" not in reply.search_text


@pytest.mark.parametrize(("body", "own"), [
    ("Đã nhận.\n\nOn Mon, Nov 2, 2026 at 9:00 AM mailbridge wrote:\n> quoted", "Đã nhận."),
    ("Đã nhận.\n-----Original Message-----\nFrom: x\nquoted", "Đã nhận."),
    ("Đã nhận.\n> quoted\nsau", "Đã nhận.\nsau"),
    ("Đã nhận.\n-- \nĐồn Biên phòng", "Đã nhận."),
    ("Đã nhận.", "Đã nhận."),
])
def test_own_words_of_a_reply(body: str, own: str) -> None:
    assert own_words(body) == own


def test_tip_words_and_folding() -> None:
    assert tip_words("Reference: NCS-1\nCategory: Ma túy\n\nCó người\n\n-- \nReply…") == \
        "Có người"
    assert search_form("Đường MÒN, Điện Biên") == "duong mon, dien bien"


def test_an_existing_ledger_gets_its_search_text_from_the_migration(
        ledger: Ledger, tmp_path: Path) -> None:
    """Rows indexed before ``search_text`` existed get it when the ledger is upgraded:
    index for real, go back to the old schema (its own index again), then upgrade."""
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(tip("NCS-0001", TEXT))
    MaildirPoller(tmp_path / "Maildir", ledger.store, relay=RELAY_ID,
                  max_message_bytes=10**6).poll()
    with ledger.sessions() as s:
        workflow.add_note(s, s.scalars(select(Tip.id)).one(), "Đã báo đồn trưởng", actor="Lan")
        s.commit()
    ledger.upgrade_from("0002_workflow")
    with ledger.sessions() as s:
        assert [t for t in s.scalars(select(Tip.ref))] == ["NCS-0001"]
        assert len(search_tip_ids(s, "duong mon")) == 1
        assert len(search_tip_ids(s, "don truong")) == 1
        assert search_tip_ids(s, "vuot bien") == []


def test_a_searchs_first_page_is_the_whole_searchs_first_page(ledger: Ledger,
                                                              tmp_path: Path) -> None:
    """On SQLite a word's first page is looked for among the newest tips first
    (``page_tips``); whatever the page size, it is the page the whole search gives:
    a word in many tips, in a follow-up of an old tip and of the newest, in a note only,
    in no tip, and a ref."""
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for n in range(1, 31):
        box.add(tip(f"NCS-{n:04d}", "Có người qua suối" if n % 3 == 0 else "Mất trâu",
                    message_id=f"<t{n}@relay.example.test>"))
    for n in (2, 30):  # an old tip's follow-up, then the newest tip's, indexed last
        box.add(tip(f"NCS-{n:04d}", "Thêm: đường hiểm",
                    references=(f"<t{n}@relay.example.test>",)))
    counts = MaildirPoller(tmp_path / "Maildir", ledger.store, relay=RELAY_ID,
                           max_message_bytes=10**6).poll()
    assert (counts.tips, counts.followups) == (30, 2)
    with ledger.sessions() as s:
        refs = {t.id: t.ref for t in s.scalars(select(Tip))}
        workflow.add_note(s, next(i for i, r in refs.items() if r == "NCS-0005"),
                          "Ghi chú riêng", actor="Lan")
        s.commit()
        for query in ("suoi", "duong hiem", "ghi chu", "suoi nua", "NCS-0007", "mat"):
            whole = [refs[i] for i in search_tip_ids(s, query)]
            assert bool(whole) == (query != "suoi nua"), query
            for size in (1, 2, 3, 5, 11, 50):
                page = page_tips(s, TipFilter(stations=("ncs",), text=query), 0, size)
                assert [r.ref for r in page] == whole[:size], (query, size)
