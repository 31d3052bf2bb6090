"""The relay's likely-spam mark, from the signed header to the ledger and the officers'
list: the poller files it on the tip (real Dovecot), the list shows it (Textual pilot)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbridge.core.message import NEAR_DUPLICATE
from mailbridge.station.ledger.db import make_engine, session_factory, upgrade
from mailbridge.station.ledger.models import Tip
from mailbridge.station.report import run_report
from mailbridge.station.tui import strings as S
from mailbridge.station.tui.tiplist import TipList
from tests.servers.mailstack import MailStack
from tests.station.poller_helpers import Ledger, append, imap_settings, new_ref, tip
from tests.station.test_tui_app import (
    SIZE,
    add_tip,
    aio,
    app_for,
    make_settings,
    screen_text,
    settle,
)


@pytest.mark.servers
def test_the_poller_files_the_mark_on_the_tip(mailstack: MailStack, address: str,
                                              ledger: Ledger) -> None:
    plain_ref, marked_ref = new_ref(), new_ref()
    append(mailstack, address, [tip(plain_ref), tip(marked_ref, likely_spam=NEAR_DUPLICATE)])
    assert ledger.poll(imap_settings(mailstack, address)).tips == 2
    with ledger.sessions() as s:
        marks = {r.ref: r.likely_spam for r in s.execute(select(Tip.ref, Tip.likely_spam))}
    assert marks == {plain_ref: "", marked_ref: NEAR_DUPLICATE}


@aio
async def test_the_officers_list_shows_the_mark(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions() as s:
        add_tip(s, 1, "Có người lạ chở hàng qua suối lúc nửa đêm")
        add_tip(s, 2, "Bản tin chép lại nhiều lần").likely_spam = NEAR_DUPLICATE
        s.commit()
    app = app_for((make_settings(tmp_path, url), sessions))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert app.query_one(TipList).total == 2
            lines = screen_text(app).splitlines()
    finally:
        engine.dispose()
    marked = next(line for line in lines if "NCS-0002" in line)
    plain = next(line for line in lines if "NCS-0001" in line)
    assert S.LIKELY_SPAM.strip()[:20] in marked and S.LIKELY_SPAM.strip()[:20] not in plain


def test_the_report_counts_marked_tips(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as s:
        add_tip(s, 1, "Có người lạ chở hàng qua suối lúc nửa đêm")
        add_tip(s, 2, "Bản tin chép lại nhiều lần").likely_spam = NEAR_DUPLICATE
        s.commit()
    engine.dispose()
    settings = make_settings(tmp_path, url)
    out = io.StringIO()
    assert run_report(settings, fmt="json", out=out) == 0
    assert json.loads(out.getvalue())["total"]["likely_spam"] == 1
    table = io.StringIO()
    assert run_report(settings, out=table) == 0
    assert f"{S.LIKELY_SPAM_COUNT}: 1" in table.getvalue()


def test_the_tips_screen_and_case_file_show_the_mark(tmp_path: Path) -> None:
    """An officer who opens the tip, or prints it for the file, sees the relay's mark
    (the list's short form is not the only place it shows)."""
    from mailbridge.station.casefile import run_export
    from mailbridge.station.tui.data import load_detail
    from mailbridge.station.tui.detail import summary
    from tests.station.test_report import pdf_text

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions() as s:
        plain = add_tip(s, 1, "Có người lạ chở hàng qua suối lúc nửa đêm")
        marked = add_tip(s, 2, "Bản tin chép lại nhiều lần")
        marked.likely_spam = NEAR_DUPLICATE
        s.commit()
        settings = make_settings(tmp_path, url)
        shown = {t.ref: summary(d, settings).plain for t in (plain, marked)
                 if (d := load_detail(s, t.id, tmp_path)) is not None}
    engine.dispose()
    assert S.LIKELY_SPAM_DETAIL in shown["NCS-0002"]
    assert S.LIKELY_SPAM_DETAIL not in shown["NCS-0001"]
    path = tmp_path / "NCS-0002.pdf"
    assert run_export(settings, "NCS-0002", path, out=io.StringIO()) == 0
    text = " ".join(pdf_text(path)[1].split())
    assert "Nghi tin rác: máy chuyển tin đã nhận nhiều bản gần giống" in text
