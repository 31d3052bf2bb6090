"""Officers read a category with the very words the tipster picked on the form."""

from __future__ import annotations

import html
import re
import unicodedata
from pathlib import Path

import httpx
from textual.widgets import OptionList

from mailbridge.config import BUILTIN_CATEGORIES, load_config
from mailbridge.station.ledger.db import make_engine, session_factory, upgrade
from mailbridge.station.tui import strings as S
from mailbridge.station.tui.access import resolve_access
from mailbridge.station.tui.app import LedgerApp
from mailbridge.station.tui.detail import DetailScreen
from mailbridge.station.tui.dialogs import ChoiceDialog
from mailbridge.station.tui.tiplist import TipList
from tests.e2e.support import MAILDIR_STATION, SECRET, relay_in_thread, relay_toml
from tests.station.test_tui_app import SIZE, add_tip, aio, make_settings, screen_text, settle

_LABEL = re.compile(r'<label for="c-([a-z-]+)">(.*?)</label>', re.S)


def form_labels(tmp_path: Path) -> dict[str, str]:
    """Category id -> label, as the real relay's Vietnamese form shows them."""
    tmp_path.mkdir()
    (tmp_path / "mailbridge.toml").write_text(relay_toml(MAILDIR_STATION), encoding="utf-8")
    settings = load_config(tmp_path / "mailbridge.toml", env={"MAILBRIDGE_SECRET": SECRET})
    with relay_in_thread(settings) as base:
        page = httpx.get(f"{base}/s/ncs?lang=vi", timeout=30).text
    return {cid: html.unescape(re.sub(r"<[^>]*>", "", label)).strip()
            for cid, label in _LABEL.findall(page)}


@aio
async def test_the_ledger_shows_the_forms_vietnamese_labels(tmp_path: Path) -> None:
    form = form_labels(tmp_path / "relay")
    assert list(form) == [c.id for c in BUILTIN_CATEGORIES]
    assert all(unicodedata.is_normalized("NFC", label) for label in form.values())
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions() as s:
        for n, category in enumerate(form, start=1):
            add_tip(s, n, f"tin {category}", category=category)
        s.commit()
    settings = make_settings(tmp_path, url)
    app = LedgerApp(settings, resolve_access(settings, user="binh"), sessions)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await pilot.press("c")  # correct the category: every label, in the form's order
            await settle(app, pilot)
            assert isinstance(app.screen, ChoiceDialog)
            options = app.screen.query_one(OptionList)
            shown = [str(options.get_option_at_index(i).prompt)
                     for i in range(options.option_count)]
            assert shown == list(form.values())
            await pilot.press("escape")
            tips = app.query_one(TipList)
            seen: dict[str, str] = {}
            for index in range(len(form)):
                tips.cursor = index
                await pilot.press("enter")
                await settle(app, pilot)
                assert isinstance(app.screen, DetailScreen) and app.screen.detail is not None
                category = app.screen.detail.category
                seen[category] = form[category]
                assert f"{S.COL_CATEGORY}: {form[category]}" in screen_text(app)
                await pilot.press("escape")
            assert seen == form
    finally:
        engine.dispose()
