"""Officers and command see a feedback box as one: its name carries "(góp ý)"."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from mailbridge.config import FEEDBACK_CATEGORIES, Settings, Station
from mailbridge.station.ledger.db import make_engine, session_factory, upgrade
from mailbridge.station.report import TipFacts, compute
from mailbridge.station.tui.detail import DetailScreen
from mailbridge.station.tui.dialogs import ChoiceDialog
from tests.station.test_tui_app import SIZE, add_tip, aio, app_for, make_settings, screen_text
from tests.station.test_tui_app import settle as settled

FEEDBACK = Station(id="gy", name="Tiểu đoàn 1", ref_prefix="GY",
                   mailbox="gopy@example.test", purpose="feedback",
                   categories=FEEDBACK_CATEGORIES, officers={"binh": "Trần Văn Bình"})


def with_feedback_box(settings: Settings) -> Settings:
    stations = {**settings.stations, "gy": FEEDBACK}
    categories = (*settings.categories,
                  *(c for c in FEEDBACK_CATEGORIES if settings.category(c.id) is None))
    return dataclasses.replace(settings, stations=stations, categories=categories)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[tuple[Settings, sessionmaker[Session]]]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions() as s:
        add_tip(s, 1, "Cơm chiều nguội", category="living", placement="", station="gy")
        add_tip(s, 2, "Có người lạ qua suối", category="smuggling")
        s.commit()
    yield with_feedback_box(make_settings(tmp_path, url)), sessions
    engine.dispose()


@aio
async def test_the_officers_screen_names_the_feedback_box(
        ledger: tuple[Settings, sessionmaker[Session]]) -> None:
    app = app_for(ledger)  # binh works at ncs (tips) and gy (feedback)
    async with app.run_test(size=SIZE) as pilot:
        await settled(app, pilot)
        assert "Đời sống, ăn ở" in screen_text(app)
        await pilot.press("enter")  # the newest first: NCS-0002, then down to GY-0001
        await settled(app, pilot)
        await pilot.press("escape", "down", "enter")
        await settled(app, pilot)
        assert isinstance(app.screen, DetailScreen)
        detail = screen_text(app)
        assert "GY-0001" in detail and "Tiểu đoàn 1 (góp ý)" in detail


def test_the_report_names_the_feedback_box(tmp_path: Path) -> None:
    settings = with_feedback_box(make_settings(tmp_path, "sqlite://"))
    tips = [TipFacts("gy", "living", "", datetime(2026, 3, 2, 8), "new"),
            TipFacts("ncs", "drugs", "cho", datetime(2026, 3, 3, 8), "new")]
    report = compute(tips, settings=settings)
    labels = {row.label for row in report.by["station"]}
    assert {"Tiểu đoàn 1 (góp ý)", "Đồn Biên phòng Nậm Cuổi"} <= labels  # a tip box: as is
    assert "Đời sống, ăn ở" in {row.label for row in report.by["category"]}


@aio
async def test_a_feedback_opinion_is_recategorised_among_its_box_s_categories(
        ledger: tuple[Settings, sessionmaker[Session]]) -> None:
    app = app_for(ledger)
    async with app.run_test(size=SIZE) as pilot:
        await settled(app, pilot)
        await pilot.press("down", "c")  # the second newest: GY-0001
        await settled(app, pilot)
        assert isinstance(app.screen, ChoiceDialog)
        assert [value for value, _ in app.screen.choices] == [c.id for c in FEEDBACK_CATEGORIES]
