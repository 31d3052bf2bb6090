"""The officers' terminal UI driven by Textual's pilot on a hand-built SQLite ledger.

Navigate, filter, search, change a status, add a note (the audit row lands in
the database), hostile tip text stays inert, and the main screen matches its
stored snapshot (regenerate with MAILBRIDGE_UPDATE_SNAPSHOTS=1).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import getpass
import html
import os
import re
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from textual.app import App, ComposeResult
from textual.widgets import Input, OptionList, Select, Static
from textual.worker import WorkerCancelled

from mailbridge.config import (
    BUILTIN_CATEGORIES,
    LedgerSettings,
    Placement,
    RelaySettings,
    Secret,
    Settings,
    Station,
)
from mailbridge.core.text import search_form
from mailbridge.errors import MailbridgeError
from mailbridge.station.ledger.db import make_engine, session_factory, upgrade
from mailbridge.station.ledger.models import (
    Attachment,
    Audit,
    Location,
    MailEvent,
    Message,
    Note,
    Tip,
    utcnow,
)
from mailbridge.station.tui import run_ledger
from mailbridge.station.tui.access import resolve_access
from mailbridge.station.tui.app import LedgerApp
from mailbridge.station.tui.data import TipRow
from mailbridge.station.tui.detail import DetailScreen
from mailbridge.station.tui.dialogs import ChoiceDialog, TextDialog
from mailbridge.station.tui.tiplist import TipList
from tests.waiting import wait_for

SNAPSHOTS = Path(__file__).with_name("__snapshots__")
T0 = datetime(2026, 3, 1, 8)
SIZE = (140, 32)
HOSTILE = ("\x1b[2J\x1b[31mĐỎ\x1b[0m [bold red]x[/] [@click=app.quit]thoát[/] "
           "\x1b]8;;http://evil.example/\x07link\x1b]8;;\x07 \u202eesrever ")


def aio(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async pilot test on a fresh event loop (no async pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def make_settings(tmp_path: Path, url: str) -> Settings:
    relay = RelaySettings(address="tips@relay.example.test", domain="relay.example.test",
                          database="sqlite://", secret=Secret("s" * 32))
    ledger = LedgerSettings(database=url, attachments_dir=tmp_path / "attachments",
                            folder_status={"Verified": "verifying"},
                            flag_status={"$Spam": "spam"})
    ncs = Station(id="ncs", name="Đồn Biên phòng Nậm Cuổi", ref_prefix="NCS",
                  mailbox="station1@example.test",
                  placements=(Placement("cho", "Chợ phiên"), Placement("truong", "Trường học")),
                  officers={"lan": "Nguyễn Thị Lan", "binh": "Trần Văn Bình"})
    mlt = Station(id="mlt", name="Đồn Biên phòng Mù Cả", ref_prefix="MLT",
                  mailbox="station2@example.test", officers={"lan": "Nguyễn Thị Lan"})
    return Settings(tmp_path / "mailbridge.toml", relay, ledger, {"ncs": ncs, "mlt": mlt},
                    BUILTIN_CATEGORIES)


def add_tip(s: Session, n: int, body: str, *, category: str = "drugs", placement: str = "cho",
            station: str = "ncs") -> Tip:
    ref = f"{station.upper()}-{n:04d}"
    msg = Message(station_id=station, message_id=f"<{ref}@relay.example.test>",
                  raw_sha256=f"{n:064d}", size=len(body), kind="tip", subject=f"[{ref}] tin báo",
                  text_body=body, search_text=search_form(body),
                  received_hour=T0 + timedelta(hours=n))
    s.add(msg)
    s.flush()
    tip = Tip(station_id=station, ref=ref, message_pk=msg.id, received_category=category,
              category=category, placement=placement, received_hour=T0 + timedelta(hours=n),
              subject=msg.subject, preview=body[:200])
    s.add(tip)
    s.flush()
    msg.tip_id = tip.id
    return tip


BODIES = [
    "Có người lạ chở hàng qua suối lúc nửa đêm",
    "Nghi vấn mua bán ma túy ở chợ phiên",
    "Nhà cuối bản cất giấu súng tự chế",
    "Xe máy không biển số qua lại đường mòn biên giới",
    "Hai người lạ ở nhờ nhà dân không khai báo tạm trú",
    "Mất trâu ở nương ngô",
]
CATEGORIES = ["smuggling", "drugs", "guns", "border", "residence", "theft"]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[tuple[Settings, sessionmaker[Session]]]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions() as s:
        for n, (body, cat) in enumerate(zip(BODIES, CATEGORIES, strict=True), start=1):
            add_tip(s, n, body, category=cat, placement="cho" if n % 2 else "truong")
        add_tip(s, 7, "Tin của đồn khác", station="mlt")
        s.commit()
    yield make_settings(tmp_path, url), sessions
    engine.dispose()


def app_for(ledger: tuple[Settings, sessionmaker[Session]], user: str = "binh") -> LedgerApp:
    settings, sessions = ledger
    return LedgerApp(settings, resolve_access(settings, user=user), sessions)


async def settle(app: LedgerApp, pilot: object) -> None:
    """Let every worker finish and the screen repaint."""
    for _ in range(3):
        for worker in list(app.workers):
            with contextlib.suppress(WorkerCancelled):
                await worker.wait()
        await pilot.pause()  # type: ignore[attr-defined]


def screen_text(app: LedgerApp) -> str:
    """The screen as plain text lines, read back from the exported SVG."""
    svg = app.export_screenshot()
    lines: dict[int, list[str]] = {}
    for line, chunk in re.findall(r'<text [^>]*clip-path="url\(#[^"]*-line-(\d+)\)"[^>]*>(.*?)'
                                  r"</text>", svg):
        lines.setdefault(int(line), []).append(html.unescape(chunk).replace("\xa0", " "))
    return "\n".join("".join(lines[k]) for k in sorted(lines))


def audit_rows(sessions: sessionmaker[Session]) -> list[tuple[str, str, str, str, str]]:
    with sessions() as s:
        rows = s.execute(select(Audit.actor, Audit.action, Audit.old, Audit.new, Audit.reason)
                         .order_by(Audit.id))
        return [tuple(r) for r in rows]  # type: ignore[misc]


@aio
async def test_list_navigate_and_open_detail(ledger: tuple[Settings, sessionmaker[Session]]
                                             ) -> None:
    app = app_for(ledger)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        tips = app.query_one(TipList)
        assert tips.total == 6  # binh sees station ncs only
        text = screen_text(app)
        assert "NCS-0006" in text and "Mất trâu ở nương ngô" in text and "MLT-0007" not in text
        assert text.index("NCS-0006") < text.index("NCS-0001")  # newest first
        assert "Trộm cắp tài sản" in text and "Trường học" in text and "Mới" in text
        await pilot.press("down", "down")
        assert tips.current is not None and tips.current.ref == "NCS-0004"
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, DetailScreen)
        detail = screen_text(app)
        assert "NCS-0004" in detail and "Xe máy không biển số" in detail
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)


@aio
async def test_virtual_list_fetches_pages_on_demand(
        ledger: tuple[Settings, sessionmaker[Session]]) -> None:
    settings, sessions = ledger
    with sessions() as s:
        for n in range(10, 260):
            add_tip(s, n, f"tin số {n}")
        s.commit()
    app = app_for(ledger)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        tips = app.query_one(TipList)
        assert tips.total == 256 and sorted(tips.pages) == [0]  # one page until scrolled
        await pilot.press("end")
        await settle(app, pilot)
        assert sorted(tips.pages) == [0, 2]
        assert tips.current is not None and tips.current.ref == "NCS-0001"
        assert "NCS-0001" in screen_text(app) and "Đang tải" not in screen_text(app)
        await pilot.press("pageup")
        await settle(app, pilot)
        assert tips.cursor == 255 - (tips.size.height - 1) and tips.current is not None


@aio
async def test_filters_and_search(ledger: tuple[Settings, sessionmaker[Session]]) -> None:
    app = app_for(ledger, user="lan")  # lan sees both stations
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        tips = app.query_one(TipList)
        assert tips.total == 7
        app.query_one("#f-station").value = "mlt"  # type: ignore[attr-defined]
        await settle(app, pilot)
        assert tips.total == 1
        app.query_one("#f-station").value = app.query_one("#f-station").NULL  # type: ignore
        app.query_one("#f-category").value = "guns"  # type: ignore[attr-defined]
        await settle(app, pilot)
        first = tips.row(0)
        assert [first.ref if first else None, tips.total] == ["NCS-0003", 1]
        await pilot.press("x")  # reset
        await settle(app, pilot)
        assert tips.total == 7
        await pilot.press("slash", *"ma tuy")  # diacritics folded, last word a prefix
        await settle(app, pilot)
        assert tips.total == 1 and tips.current is not None and tips.current.ref == "NCS-0002"
        await pilot.press("escape")
        app.query_one("#f-text").value = ""  # type: ignore[attr-defined]
        app.query_one("#f-from").value = "2026-03-01"  # type: ignore[attr-defined]
        app.query_one("#f-to").value = "2026-13-01"  # type: ignore[attr-defined]
        await settle(app, pilot)
        assert app.query_one("#f-to").has_class("invalid")
        assert tips.total == 7
        app.query_one("#f-to").value = "2026-03-01"  # type: ignore[attr-defined]
        await settle(app, pilot)
        assert tips.total == 7  # every tip came in on 1 March
        app.query_one("#f-from").value = "2026-03-02"  # type: ignore[attr-defined]
        await settle(app, pilot)
        assert tips.total == 0


@aio
async def test_status_change_and_note_are_audited(
        ledger: tuple[Settings, sessionmaker[Session]]) -> None:
    settings, sessions = ledger
    app = app_for(ledger)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("s")
        await settle(app, pilot)
        assert isinstance(app.screen, ChoiceDialog)
        await pilot.press("enter", *"goi lai", "enter")  # first choice: verifying
        await settle(app, pilot)
        assert audit_rows(sessions) == [("Trần Văn Bình", "status", "new", "verifying",
                                         "goi lai")]
        assert "Đang xác minh" in screen_text(app)
        await pilot.press("enter")  # open the tip, then write a note from its screen
        await settle(app, pilot)
        await pilot.press("n")
        await settle(app, pilot)
        assert isinstance(app.screen, TextDialog)
        await pilot.press(*"Da hoi truong ban", "ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, DetailScreen)
        assert "Da hoi truong ban" in screen_text(app)
        await pilot.press("a")
        await settle(app, pilot)
        await pilot.press("down", "down", "enter")  # "", then sorted officers
        await settle(app, pilot)
    rows = audit_rows(sessions)
    assert rows[1:] == [("Trần Văn Bình", "note", "", "Da hoi truong ban", ""),
                        ("Trần Văn Bình", "assign", "", "Trần Văn Bình", "")]
    with sessions() as s:
        tip = s.scalars(select(Tip).where(Tip.ref == "NCS-0006")).one()
        assert (tip.status, tip.assignee) == ("verifying", "Trần Văn Bình")
        assert s.scalars(select(Note.text)).all() == ["Da hoi truong ban"]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@aio
async def test_after_a_save_the_cursor_stays_on_the_tip_while_new_ones_arrive(
        ledger: tuple[Settings, sessionmaker[Session]], size: tuple[int, int]) -> None:
    settings, sessions = ledger
    app = app_for(ledger)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        tips = app.query_one(TipList)
        await pilot.press("down", "down")
        chosen = tips.current
        assert chosen is not None and tips.cursor == 2
        with sessions() as s:  # two tips arrive meanwhile, newer than every other
            for n in (20, 21):
                add_tip(s, n, f"Tin mới số {n}")
            s.commit()
        await pilot.press("s")
        await settle(app, pilot)
        await pilot.press("enter", *"goi lai", "enter")
        await settle(app, pilot)
        assert tips.total == 8 and tips.cursor == 4
        current = tips.current
        assert current is not None and current.id == chosen.id
        assert current.status == "verifying"


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@aio
async def test_placement_choices_follow_the_station_filter_and_include_unknown(
        ledger: tuple[Settings, sessionmaker[Session]], size: tuple[int, int]) -> None:
    settings, sessions = ledger
    with sessions() as s:
        add_tip(s, 8, "Không qua áp phích", placement="")
        add_tip(s, 9, "Ở đồn Mù Cả", station="mlt", placement="cho")
        s.commit()
    app = app_for(ledger, user="lan")  # an officer of both stations
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        placement = app.query_one("#f-placement", Select)

        def choices() -> list[tuple[str, object]]:
            return [(str(label), value) for label, value in placement._options[1:]]

        assert choices() == [("MLT · cho", "mlt/cho"), ("MLT · (không rõ)", "mlt/"),
                             ("NCS · Chợ phiên", "ncs/cho"), ("NCS · Trường học", "ncs/truong"),
                             ("NCS · (không rõ)", "ncs/")]
        app.query_one("#f-station", Select).value = "ncs"
        await settle(app, pilot)
        assert [v for _, v in choices()] == ["ncs/cho", "ncs/truong", "ncs/"]
        assert choices()[0][0] == "Chợ phiên"
        placement.value = "ncs/"
        await settle(app, pilot)
        tips = app.query_one(TipList)
        first = tips.row(0)
        assert tips.total == 1 and first is not None and first.ref == "NCS-0008"


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@aio
async def test_the_list_counts_verdicts_as_the_report_does(
        ledger: tuple[Settings, sessionmaker[Session]], size: tuple[int, int]) -> None:
    """A tip moved on to "handled" keeps its verdict: the verdict filter finds it and the
    count line prints the report's own figures for what the list shows."""
    from mailbridge.station.report import Period, build

    settings, sessions = ledger
    with sessions() as s:
        tips = {t.ref: t for t in s.scalars(select(Tip))}
        tips["NCS-0001"].status, tips["NCS-0001"].verdict = "handled", "of_value"
        tips["NCS-0002"].status = "of_value"  # a row from before the verdict column
        tips["NCS-0003"].status, tips["NCS-0003"].verdict = "spam", "spam"
        tips["NCS-0004"].status = "verifying"
        s.commit()
    report = build(settings, Period(), "ncs")
    app = app_for(ledger)  # binh: station ncs only
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        line = str(app.query_one("#count", Static).render())
        total = report.total
        assert line.endswith(
            f"{total.received} tin · có giá trị {total.of_value} ({total.of_value_percent}%) · "
            f"không có giá trị {total.not_of_value} · tin rác {total.spam} · đã xử lý "
            f"{total.handled} · chưa xử lý xong {total.open}"), line
        assert (total.received, total.of_value, total.spam, total.open) == (6, 2, 1, 3)
        app.query_one("#f-verdict", Select).value = "of_value"
        await settle(app, pilot)
        listed = app.query_one(TipList)
        assert listed.total == 2
        assert {r.ref for r in (listed.row(0), listed.row(1)) if r} == {"NCS-0001", "NCS-0002"}
        app.query_one("#f-verdict", Select).value = "none"
        await settle(app, pilot)
        assert listed.total == 3


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@aio
async def test_times_are_the_stations_and_said_so(
        ledger: tuple[Settings, sessionmaker[Session]], size: tuple[int, int]) -> None:
    """Hours are shown on the station's clock (UTC+7 by default), the heading says so, and
    a date typed in the box is the station's day."""
    settings, sessions = ledger
    with sessions() as s:
        tip = add_tip(s, 30, "Đêm qua có xe lạ")
        tip.received_hour = datetime(2026, 1, 31, 20)  # 03h on 1 February in Vietnam
        s.commit()
    app = app_for(ledger)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        lines = screen_text(app).splitlines()
        assert "Nhận lúc (+07)" in lines[3]
        assert any(line.startswith("NCS-0030  2026-02-01 03h") for line in lines), lines
        app.query_one("#f-from", Input).value = "2026-02-01"
        app.query_one("#f-to", Input).value = "2026-02-01"
        await settle(app, pilot)
        first = app.query_one(TipList).row(0)
        assert app.query_one(TipList).total == 1 and first is not None
        assert first.ref == "NCS-0030"


@aio
async def test_mailbox_signals_applied_on_open_and_shown(
        ledger: tuple[Settings, sessionmaker[Session]]) -> None:
    settings, sessions = ledger
    with sessions() as s:
        tip = s.scalars(select(Tip).where(Tip.ref == "NCS-0006")).one()
        s.add(Location(message_pk=tip.message_pk, station_id="ncs", folder="Verified",
                       uidvalidity=1, uid=9, flags="\\Flagged"))
        s.add(MailEvent(station_id="ncs", message_pk=tip.message_pk, kind="moved",
                        folder="Verified"))
        s.commit()
    app = app_for(ledger)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.query_one(TipList).current is not None
        assert app.query_one(TipList).current.status == "verifying"  # type: ignore[union-attr]
        await pilot.press("enter")
        await settle(app, pilot)
        shown = screen_text(app)
    assert "Tin báo · Verified: chưa đọc, gắn cờ" in shown and "\\Flagged" not in shown
    assert "Hộp thư  Trạng thái: Mới → Đang xác minh  (thư mục Verified)" in shown
    assert audit_rows(sessions) == [("mailbox", "status", "new", "verifying", "folder Verified")]


@aio
async def test_verdict_needs_a_reason(ledger: tuple[Settings, sessionmaker[Session]]) -> None:
    settings, sessions = ledger
    app = app_for(ledger)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("s", "down", "enter", "enter")  # not of value, with no reason
        await settle(app, pilot)
        assert isinstance(app.screen, ChoiceDialog)  # still asking
        assert app.screen.query_one("#reason").has_class("invalid")
        assert audit_rows(sessions) == []
        await pilot.press(*"trung tin", "enter")
        await settle(app, pilot)
        assert not isinstance(app.screen, ChoiceDialog)
    assert audit_rows(sessions) == [("Trần Văn Bình", "status", "new", "not_of_value",
                                     "trung tin")]


@aio
async def test_hostile_text_is_inert(ledger: tuple[Settings, sessionmaker[Session]],
                                     tmp_path: Path) -> None:
    settings, sessions = ledger
    big = HOSTILE + ("lorem ipsum " * 90_000)[:1_000_000]
    with sessions() as s:
        tip = add_tip(s, 8, big, category="other")
        s.add(Attachment(message_pk=tip.message_pk, filename="[red]ảnh[/]\x1b[5m.jpg",
                         content_type="image/jpeg", size=2048, sha256="a" * 64,
                         stored_path="x/1.jpg"))
        s.commit()
    app = app_for(ledger)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        listing = screen_text(app)
        assert "NCS-0008" in listing and "[bold red]x[/]" in listing
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, DetailScreen)
        shown = screen_text(app)
        assert app.is_running
        for literal in ("[bold red]x[/]", "[@click=app.quit]thoát[/]", "ĐỎ"):
            assert literal in shown
        files = app.screen.query_one("#attachments", OptionList)
        assert str(files.get_option_at_index(0).prompt).startswith("[red]ảnh[/].jpg  (")
        assert "esrever" in shown and "\u202e" not in shown and "\x1b" not in shown
        assert "[31m" not in shown and "evil.example" not in shown
        await pilot.click("#thread")  # a click on the text runs no action from it
        await settle(app, pilot)
        assert app.is_running and isinstance(app.screen, DetailScreen)
        assert app.screen.detail is not None and app.screen.detail.thread[0].hidden_chars > 0


@aio
async def test_a_locked_ledger_is_a_notification_not_a_crash(
        ledger: tuple[Settings, sessionmaker[Session]], tmp_path: Path) -> None:
    """Another program holding the ledger locked (a backup, a long poll): every screen
    that reads or writes says so, and the officer can go on once it is free."""
    settings, sessions = ledger
    engine = make_engine(settings.ledger.database, busy_timeout=0.1)
    app = LedgerApp(settings, resolve_access(settings, user="binh"), session_factory(engine))
    lock = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    try:
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await settle(app, pilot)
            assert app.query_one(TipList).total == 6
            for idle in (engine, sessions.kw["bind"]):  # WAL: an exclusive lock needs the
                idle.dispose()                          # file to itself for a moment
            lock.execute("PRAGMA locking_mode=EXCLUSIVE")
            lock.execute("BEGIN EXCLUSIVE")  # readers are locked out too
            await pilot.press("r")  # reload: mailbox signals, placements, the list
            await settle(app, pilot)
            await pilot.press("s", "enter", *"goi lai", "enter")  # a status change
            await settle(app, pilot)
            errors = [str(toast.render()) for toast in app.screen.query(".-error")]
            lock.close()
            await pilot.press("r")
            await settle(app, pilot)
            assert app.is_running and app.query_one(TipList).total == 6
    finally:
        lock.close()
        engine.dispose()
    assert len(errors) == 2, errors
    # In officers' words, the database's own words kept for the admin.
    assert all(e.startswith("Sổ tin đang bị chương trình khác khóa (ledger.database)")
               and "Chi tiết: database is locked" in e for e in errors), errors
    assert audit_rows(sessions) == []


@aio
async def test_forged_relay_mail_is_announced_never_listed(
        ledger: tuple[Settings, sessionmaker[Session]]) -> None:
    settings, sessions = ledger
    with sessions() as s:
        for n in (1, 2):
            s.add(Message(station_id="ncs", message_id=f"<forged{n}@relay.example.test>",
                          raw_sha256=f"f{n:063d}", size=10, kind="forged",
                          subject="[NCS-0001] Ma túy — giả", text_body="giả",
                          warning="not from the relay: it is not signed by the relay"))
        s.add(Message(station_id="mlt", message_id="<forged3@relay.example.test>",
                      raw_sha256="f" * 64, size=10, kind="forged", subject="x", text_body="x"))
        s.commit()
    app = app_for(ledger)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(app, pilot)
        warnings = [str(toast.render()) for toast in app.screen.query(".-warning")]
        total = app.query_one(TipList).total
    assert total == 6  # forged mail is no tip
    assert len(warnings) == 1 and warnings[0].startswith("Có 2 thư mạo danh"), warnings


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@aio
async def test_the_desk_fits_from_80_by_24_with_two_stations(
        ledger: tuple[Settings, sessionmaker[Session]], size: tuple[int, int]) -> None:
    """Every filter and the search box keep a usable width, the tipster's words stay on
    screen, and Escape leaves the search box for the list."""
    app = app_for(ledger, user="lan")  # two stations: one more filter
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        for wid in ("f-status", "f-category", "f-station", "f-placement", "f-assignee",
                    "f-from", "f-to", "f-verdict", "f-text"):
            widget = app.query_one(f"#{wid}")
            assert widget.size.width >= 10, (wid, widget.size)
            assert widget.region.right <= size[0], (wid, widget.region)
        assert "Nội dung" in screen_text(app).splitlines()[3]
        await pilot.press("slash", *"suoi")
        await settle(app, pilot)
        assert app.query_one("#f-text", Input).has_focus
        assert "suoi" in screen_text(app)
        assert app.query_one(TipList).total == 1  # "Có người lạ chở hàng qua suối"
        await pilot.press("escape")
        await settle(app, pilot)
        assert app.query_one(TipList).has_focus


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@aio
async def test_main_screen_snapshot(ledger: tuple[Settings, sessionmaker[Session]],
                                    size: tuple[int, int]) -> None:
    app = app_for(ledger)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        svg = app.export_screenshot(title="mailbridge ledger")
    stored = SNAPSHOTS / f"ledger_main_{size[0]}x{size[1]}.svg"
    if os.environ.get("MAILBRIDGE_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        stored.write_text(svg, encoding="utf-8")
    assert stored.is_file(), "no stored snapshot: run once with MAILBRIDGE_UPDATE_SNAPSHOTS=1"
    assert svg == stored.read_text(encoding="utf-8")


def test_access_by_os_account(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "sqlite://")
    access = resolve_access(settings, user="lan")
    assert access.stations == ("ncs", "mlt") and access.actor("ncs") == "Nguyễn Thị Lan"
    assert resolve_access(settings, user="binh").stations == ("ncs",)
    assert resolve_access(settings, officer="Trần Văn Bình", user="x").stations == ("ncs",)
    with pytest.raises(MailbridgeError, match=r"add mallory = .*stations.<id>.officers"):
        resolve_access(settings, user="mallory")
    with pytest.raises(MailbridgeError, match="stations.mlt.officers"):
        resolve_access(settings, user="binh", station="mlt")


def test_an_officer_through_sudo_is_the_account_that_ran_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed, the ledger is the station user's and officers open it with sudo."""
    settings = make_settings(tmp_path, "sqlite://")
    monkeypatch.setenv("USER", "mailbridge-station")
    monkeypatch.setenv("LOGNAME", "mailbridge-station")
    monkeypatch.setenv("SUDO_USER", "binh")
    assert resolve_access(settings).actor("ncs") == "Trần Văn Bình"
    monkeypatch.delenv("SUDO_USER")
    with pytest.raises(MailbridgeError, match="OS account 'mailbridge-station'"):
        resolve_access(settings)


def test_run_ledger_refuses_an_unlisted_os_account(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}")
    account = getpass.getuser()
    assert account not in settings.stations["ncs"].officers
    assert run_ledger(settings) == 2
    assert gc.isenabled()  # off only while the UI starts
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f'add {account} = "Officer name" to stations.<id>.officers' in err
    assert not (tmp_path / "ledger.db").exists()  # refused before touching the ledger


def toasts(app: LedgerApp) -> list[str]:
    return [str(toast.render()) for toast in app.screen.query("Toast")]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@aio
async def test_date_boxes_read_day_month_year_and_say_what_is_wrong(
        ledger: tuple[Settings, sessionmaker[Session]], size: tuple[int, int]) -> None:
    """Every tip arrived on 1 March (station time): "1/3/2026" and "01/03/2026" keep them,
    the next day drops them, and a date that cannot be read is said in one line."""
    app = app_for(ledger)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        tips = app.query_one(TipList)
        app.query_one("#f-from", Input).value = "1/3/2026"
        app.query_one("#f-to", Input).value = "01/03/2026"
        await settle(app, pilot)
        assert tips.total == 6
        app.query_one("#f-from", Input).value = "2026-03-02"
        await settle(app, pilot)
        assert tips.total == 0
        app.query_one("#f-from", Input).value = "31/02/2026"
        await settle(app, pilot)
        lines = screen_text(app).splitlines()
        assert tips.total == 6  # the readable box still filters
        assert any("Không đọc được ngày '31/02/2026'" in line for line in lines), lines
        app.query_one("#f-from", Input).value = ""
        await settle(app, pilot)
        assert "Không đọc được" not in screen_text(app)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@aio
async def test_q_inside_a_tip_goes_back_and_there_is_no_english_palette(
        ledger: tuple[Settings, sessionmaker[Session]], size: tuple[int, int]) -> None:
    app = app_for(ledger)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+p")
        await settle(app, pilot)
        assert app.screen is app.screen_stack[0]  # no command palette
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, DetailScreen)
        await pilot.press("q")
        await settle(app, pilot)
        assert app.is_running and not isinstance(app.screen, DetailScreen)


@aio
async def test_reason_hint_follows_the_rule_and_one_letter_is_refused(
        ledger: tuple[Settings, sessionmaker[Session]]) -> None:
    settings, sessions = ledger
    app = app_for(ledger)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(app, pilot)
        await pilot.press("s")
        await settle(app, pilot)
        box = app.screen.query_one("#reason", Input)
        assert box.placeholder == "Lý do (không bắt buộc)"  # new → verifying
        await pilot.press("down")
        assert box.placeholder == "Lý do (bắt buộc)"
        await pilot.press("up", "enter", "x", "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, ChoiceDialog) and box.has_class("invalid")
        assert any("Lý do quá ngắn" in t for t in toasts(app)), toasts(app)
        assert audit_rows(sessions) == []
        await pilot.press("backspace", "enter")  # no reason is fine here
        await settle(app, pilot)
        assert not isinstance(app.screen, ChoiceDialog)
    assert audit_rows(sessions) == [("Trần Văn Bình", "status", "new", "verifying", "")]


@aio
async def test_the_note_dialog_says_ctrl_s(ledger: tuple[Settings, sessionmaker[Session]]
                                           ) -> None:
    app = app_for(ledger)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("n")
        await settle(app, pilot)
        assert isinstance(app.screen, TextDialog)
        assert "Ctrl+S để lưu" in screen_text(app)


@aio
async def test_attachment_keys_give_feedback_and_blame_the_right_thing(
        ledger: tuple[Settings, sessionmaker[Session]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`o` says it is opening the file (a stand-in xdg-open on PATH records it); `w` on an
    officer's reply attachment, never stored in the ledger, does not blame the config."""
    settings, sessions = ledger
    stored = settings.ledger.attachments_dir / "ab" / "1.jpg"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"jpeg")
    with sessions() as s:
        tip = s.scalars(select(Tip).where(Tip.ref == "NCS-0006")).one()
        s.add(Attachment(message_pk=tip.message_pk, filename="anh.jpg", content_type="image/jpeg",
                         size=4, sha256="a" * 64, stored_path="ab/1.jpg"))
        reply = Message(station_id="ncs", message_id="<r1@station.example.test>",
                        raw_sha256="f" * 64, size=10, kind="reply", subject="Re: [NCS-0006]",
                        text_body="Cảm ơn", search_text="cam on", tip_id=tip.id,
                        received_hour=T0 + timedelta(hours=9))
        s.add(reply)
        s.flush()
        s.add(Attachment(message_pk=reply.id, filename="bien-ban.pdf",
                         content_type="application/pdf", size=4, sha256="b" * 64,
                         stored_path=""))
        s.commit()
    bin_dir, opened = tmp_path / "bin", tmp_path / "opened"
    bin_dir.mkdir()
    (bin_dir / "xdg-open").write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    (bin_dir / "xdg-open").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    app = app_for(ledger)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("o")
        await settle(app, pilot)
        assert any("Đang mở anh.jpg" in t for t in toasts(app)), toasts(app)
        wait_for(lambda: all(p.poll() is not None for p in app.opened),
                 "the stand-in xdg-open to finish")
        assert opened.read_text().strip() == str(stored)
        app.screen.query_one("#attachments", OptionList).highlighted = 1
        await pilot.press("w")
        await settle(app, pilot)
        shown = toasts(app)
        assert any("bien-ban.pdf không được lưu trong sổ" in t for t in shown), shown
        assert not any("attachments_dir" in t for t in shown), shown


@aio
async def test_the_tip_screen_speaks_vietnamese(
        ledger: tuple[Settings, sessionmaker[Session]]) -> None:
    """Mailbox signals in words, one line per message and folder; categories in the
    history by their labels; a refusal of the workflow with the statuses' labels."""
    settings, sessions = ledger
    with sessions() as s:
        tip = s.scalars(select(Tip).where(Tip.ref == "NCS-0006")).one()
        follow = Message(station_id="ncs", message_id="<f1@relay.example.test>",
                         raw_sha256="e" * 64, size=5, kind="followup", subject="[NCS-0006]",
                         text_body="Thêm", search_text="them", tip_id=tip.id,
                         received_hour=T0 + timedelta(hours=9))
        s.add(follow)
        s.flush()
        for pk, uid in ((tip.message_pk, 1), (follow.id, 2)):
            s.add(Location(message_pk=pk, station_id="ncs", folder="INBOX", uidvalidity=1,
                           uid=uid, flags="\\Seen" if uid == 1 else ""))
        s.commit()
    app = app_for(ledger)
    async with app.run_test(size=(140, 50), notifications=True) as pilot:
        await settle(app, pilot)
        await pilot.press("c", "enter", *"sai loai", "enter")  # theft → drugs
        await settle(app, pilot)
        with sessions() as s:  # meanwhile another officer calls it spam
            s.execute(update(Tip).where(Tip.ref == "NCS-0006").values(status="spam"))
            s.commit()
        await pilot.press("enter")
        await settle(app, pilot)
        shown = screen_text(app)
        assert "Tin báo · Hộp thư đến: đã đọc" in shown, shown
        assert "Bổ sung của người báo tin · Hộp thư đến: chưa đọc" in shown, shown
        assert "INBOX" not in shown and "\\Seen" not in shown
        assert "Loại tin: Trộm cắp tài sản → Ma túy" in shown, shown
        assert "theft" not in shown
        assert isinstance(app.screen, DetailScreen) and app.screen.detail is not None
        app.screen.detail.status = "new"  # as the screen saw it before the other officer
        await pilot.press("s", "down", "down", "enter", *"rac qua", "enter")  # spam → spam
        await settle(app, pilot)
        said = toasts(app)
    assert any("không thể chuyển từ Tin rác sang Tin rác (chỉ được chuyển sang: Đã xử lý, "
               "Đang xác minh)" in t for t in said), said
    assert not any("cannot go" in t for t in said), said


async def until(pilot: object, predicate: Callable[[], object], what: str,
                timeout: float = 20.0) -> None:
    """Let the app run until *predicate* holds; fail naming *what* after *timeout* s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@aio
async def test_new_tips_appear_by_themselves_marked_and_counted(
        ledger: tuple[Settings, sessionmaker[Session]], size: tuple[int, int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """While the list is open, tips the poller files appear without r, the cursor stays on
    the officer's tip, and the count line says how many arrived; r starts the count again."""
    settings, sessions = ledger
    monkeypatch.setattr(LedgerApp, "WATCH_SECONDS", 0.1)
    app = app_for(ledger)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        tips = app.query_one(TipList)
        await pilot.press("down")
        chosen = tips.current
        assert chosen is not None and tips.total == 6
        with sessions() as s:
            for n in (20, 21):
                add_tip(s, n, f"Tin mới số {n}")
            add_tip(s, 22, "Tin của đồn khác", station="mlt")  # not binh's: not counted
            s.commit()
        await until(pilot, lambda: tips.total == 8 and "● 2 tin mới" in screen_text(app),
                    "the new tips on screen")
        current = tips.current
        assert current is not None and current.id == chosen.id and tips.cursor == 3
        assert tips.new_after is not None
        first = tips.row(0)
        assert first is not None and first.ref == "NCS-0021" and first.id > tips.new_after
        await pilot.press("r")
        await settle(app, pilot)
        assert "tin mới" not in screen_text(app)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@aio
async def test_assigned_to_me_assignee_filters_and_overdue_tips(
        ledger: tuple[Settings, sessionmaker[Session]], size: tuple[int, int]) -> None:
    """"Giao cho tôi", nobody, or one officer; an open tip untouched for
    ledger.overdue_days (3) has a ⚠ before its status, a closed or recent one none."""
    settings, sessions = ledger
    now = utcnow()
    with sessions() as s:
        tips_by_ref = {t.ref: t for t in s.scalars(select(Tip))}
        tips_by_ref["NCS-0002"].assignee = "Trần Văn Bình"
        tips_by_ref["NCS-0003"].assignee = "Nguyễn Thị Lan"
        tips_by_ref["NCS-0004"].updated_at = now - timedelta(days=4)
        tips_by_ref["NCS-0005"].updated_at = now - timedelta(days=2)
        tips_by_ref["NCS-0001"].updated_at = now - timedelta(days=10)
        tips_by_ref["NCS-0001"].status = "of_value"
        s.commit()
    app = app_for(ledger)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        lines = screen_text(app).splitlines()
        marked = [line.split()[0] for line in lines if "⚠ Mới" in line]
        assert marked == ["NCS-0004"], lines
        tips, who = app.query_one(TipList), app.query_one("#f-assignee", Select)
        for value, refs in (("me", ["NCS-0002"]), ("o:Nguyễn Thị Lan", ["NCS-0003"]),
                            ("nobody", ["NCS-0006", "NCS-0005", "NCS-0004", "NCS-0001"])):
            who.value = value
            await settle(app, pilot)
            assert [r.ref for r in (tips.row(i) for i in range(tips.total)) if r] == refs


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@aio
async def test_long_refs_are_never_cut(ledger: tuple[Settings, sessionmaker[Session]],
                                       size: tuple[int, int]) -> None:
    settings, sessions = ledger
    with sessions() as s:
        add_tip(s, 123456, "Tin thứ một trăm nghìn")  # NCS-123456
        s.commit()
    app = app_for(ledger)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        lines = screen_text(app).splitlines()
    assert lines[4].startswith("NCS-123456 "), lines
    assert lines[5].startswith("NCS-0006 "), lines
    assert lines[3].index("Nhận lúc") == len("NCS-123456 ") == lines[5].index("2026-")


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@aio
async def test_stations_are_told_apart_and_enter_goes_back_to_the_list(
        ledger: tuple[Settings, sessionmaker[Session]], size: tuple[int, int]) -> None:
    """"Đồn Biên phòng Nậm Cuổi" and "Đồn Biên phòng Mù Cả" are "Nậm Cuổi" and "Mù Cả" in
    the station box; Enter in the search box (or Escape in a filter) is the list again."""
    app = app_for(ledger, user="lan")
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        app.query_one("#f-station", Select).value = "mlt"
        await settle(app, pilot)
        assert "Mù Cả" in screen_text(app).splitlines()[1]
        assert "Đồn Biên phòng" not in screen_text(app).splitlines()[1]
        await pilot.press("slash", *"tin", "enter")
        await settle(app, pilot)
        assert app.query_one(TipList).has_focus and app.query_one(TipList).total == 1
        await pilot.press("f")
        assert app.query_one("#f-status", Select).has_focus
        await pilot.press("escape")
        assert app.query_one(TipList).has_focus


@aio
async def test_keys_at_once_find_the_filter_bar(ledger: tuple[Settings, sessionmaker[Session]]
                                                ) -> None:
    """The filter bar comes after the first page; a key pressed before it still works."""
    app = app_for(ledger)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("slash", *"suoi")
        await settle(app, pilot)
        assert app.query_one("#f-text", Input).value == "suoi"
        assert app.filter.text == "suoi"
        assert "NCS-0001" in screen_text(app) and "NCS-0002" not in screen_text(app)
        await pilot.press("escape", "f")
        assert app.focused is app.query_one("#f-status", Select)


@aio
async def test_the_list_keeps_its_height_until_a_search_is_counted() -> None:
    """A search's first page comes before its count: the list keeps its height until
    the count sets it (a new height reflows the whole screen first), also when the count
    is the first page's length."""
    class OneList(App[None]):
        def compose(self) -> ComposeResult:
            yield TipList(lambda row: [row.ref, "", "", "", "", "", row.preview], id="tips")

    rows = [TipRow(id=n, station_id="ncs", ref=f"NCS-{n:04d}", received_hour=T0,
                   category="drugs", placement="", status="new", assignee="", preview="x")
            for n in range(100, 0, -1)]
    app = OneList()
    async with app.run_test(size=(80, 24)) as pilot:
        tips = app.query_one(TipList)
        tips.reset(5000, rows)
        await pilot.pause()
        generation = tips.reset(100, rows, counted=False)
        await pilot.pause()
        assert (tips.total, tips.virtual_size.height) == (100, 5000)
        tips.set_total(generation, 100)
        await pilot.pause()
        assert tips.virtual_size.height == 100
        tips.reset(3, rows[:3], counted=False)  # shorter than the screen: at once
        await pilot.pause()
        assert tips.virtual_size.height == 3
