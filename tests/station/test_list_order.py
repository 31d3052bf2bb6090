"""Within one hour the officers' list is in the order tips were accepted (their refs),
not the order they were indexed in: a delivery delay or a re-index reorders mail, never
refs. SQLite and PostgreSQL; the migration fills the number in for an older ledger."""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbridge.core.receipts import ref_number
from mailbridge.station.ledger.models import Tip
from mailbridge.station.ledger.search import search_tip_ids
from mailbridge.station.poller.maildir import MaildirPoller
from mailbridge.station.tui.data import TipFilter, page_tips, position_of
from tests.station.poller_helpers import RELAY_ID, Ledger, tip


@pytest.fixture
def ledger(any_ledger: Ledger) -> Ledger:
    return any_ledger


def index_out_of_order(ledger: Ledger, folder: Path) -> None:
    """Three tips of the same hour, their mail arriving 3, 1, 2 (one pass each)."""
    box = mailbox.Maildir(folder, create=True)
    poller = MaildirPoller(folder, ledger.store, relay=RELAY_ID, max_message_bytes=10**6)
    for ref in ("NCS-0003", "NCS-0001", "NCS-0002"):
        box.add(tip(ref, f"Tin số {ref}"))
        assert poller.poll().tips == 1


def listed(ledger: Ledger) -> list[str]:
    with ledger.sessions() as s:
        return [r.ref for r in page_tips(s, TipFilter(stations=("ncs",)), 0, 50)]


def test_one_hours_tips_are_listed_as_they_were_accepted(ledger: Ledger,
                                                        tmp_path: Path) -> None:
    index_out_of_order(ledger, tmp_path / "Maildir")
    with ledger.sessions() as s:
        assert {t.ref: t.ref_seq for t in s.scalars(select(Tip))} == {
            "NCS-0001": 1, "NCS-0002": 2, "NCS-0003": 3}
        by_id = sorted(s.scalars(select(Tip)), key=lambda t: t.id)
        assert [t.ref for t in by_id] == ["NCS-0003", "NCS-0001", "NCS-0002"]
        searched = [s.get(Tip, pk) for pk in search_tip_ids(s, "tin so")]
        assert [t.ref for t in searched if t] == ["NCS-0003", "NCS-0002", "NCS-0001"]
    assert listed(ledger) == ["NCS-0003", "NCS-0002", "NCS-0001"]


def test_an_older_ledger_gets_the_numbers_from_the_migration(ledger: Ledger,
                                                            tmp_path: Path) -> None:
    index_out_of_order(ledger, tmp_path / "Maildir")
    ledger.upgrade_from("0004_likely_spam")
    assert listed(ledger) == ["NCS-0003", "NCS-0002", "NCS-0001"]


def test_a_tips_position_is_its_place_in_the_list(ledger: Ledger, tmp_path: Path) -> None:
    """The cursor follows a tip to where the list shows it (ids say 3, 1, 2)."""
    index_out_of_order(ledger, tmp_path / "Maildir")
    f = TipFilter(stations=("ncs",))
    with ledger.sessions() as s:
        rows = page_tips(s, f, 0, 50)
        assert [position_of(s, f, r.id) for r in rows] == [0, 1, 2]


@pytest.mark.parametrize(("ref", "number"), [
    ("NCS-0042", 42), ("NCS-12345", 12345), ("A1-0007", 7), ("", 0), ("NCS", 0),
    ("NCS-", 0), ("-0042", 0), ("NCS-00٤2", 0), ("NCS-4x", 0)])
def test_ref_number(ref: str, number: int) -> None:
    assert ref_number(ref) == number
