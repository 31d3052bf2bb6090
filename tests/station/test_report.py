"""``mailbridge report`` against a hand-built ledger whose figures are known by hand.

Nine tips over two stations and three months. Expected figures (all periods):
received 9; of value 3 (one of them handled, one without a stored verdict);
not of value 2; spam 1; open 3; hours to first action 1,2,3,4,6,8,10 -> median 4.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from mailbridge.config import (
    BUILTIN_CATEGORIES,
    Category,
    LedgerSettings,
    Placement,
    RelaySettings,
    Secret,
    Settings,
    Station,
)
from mailbridge.errors import ConfigError
from mailbridge.station.ledger.db import make_engine, session_factory, upgrade
from mailbridge.station.ledger.models import Tip
from mailbridge.station.report import (
    Figures,
    Period,
    Report,
    TipFacts,
    compute,
    parse_period,
    run_report,
)

# (n, station, month, category, placement, status, verdict, hours to first action)
LEDGER = [
    (1, "ncs", 1, "drugs", "cho", "handled", "of_value", 2),
    (2, "ncs", 1, "drugs", "cho", "of_value", "", 4),
    (3, "ncs", 1, "theft", "truong", "not_of_value", "not_of_value", 1),
    (4, "ncs", 1, "theft", "", "spam", "spam", 10),
    (5, "ncs", 1, "drugs", "truong", "new", "", None),
    (6, "ncs", 2, "drugs", "cho", "verifying", "", 3),
    (7, "ncs", 2, "guns", "cho", "handled", "not_of_value", 6),
    (8, "mlt", 1, "drugs", "", "of_value", "of_value", 8),
    (9, "mlt", 3, "other", "", "new", "", None),
]


def settings_for(tmp_path: Path, url: str) -> Settings:
    relay = RelaySettings(address="tips@relay.example.test", domain="relay.example.test",
                          database="sqlite://", secret=Secret("s" * 32))
    stations = {
        "ncs": Station(id="ncs", name="Đồn Nậm Cuổi", ref_prefix="NCS",
                       mailbox="station1@example.test",
                       placements=(Placement("cho", "Chợ phiên"),
                                   Placement("truong", "Trường học"))),
        "mlt": Station(id="mlt", name="Đồn Mù Cả", ref_prefix="MLT",
                       mailbox="station2@example.test"),
    }
    categories = tuple(c if c.id != "guns" else Category("guns", "guns", {"vi": "Súng tự chế"})
                       for c in BUILTIN_CATEGORIES)
    return Settings(tmp_path / "mailbridge.toml", relay,
                    LedgerSettings(database=url, attachments_dir=tmp_path), stations, categories)


def facts() -> list[TipFacts]:
    out = []
    for n, station, month, category, placement, status, verdict, hours in LEDGER:
        received = datetime(2026, month, n, 8)
        first = received + timedelta(hours=hours) if hours is not None else None
        out.append(TipFacts(station, category, placement, received, status, verdict, first))
    return out


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = (f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as s:
        for (n, station, *_), f in zip(LEDGER, facts(), strict=True):
            s.add(Tip(station_id=station, ref=f"{station.upper()}-{n:04d}",
                      received_category=f.category, category=f.category, placement=f.placement,
                      received_hour=f.received_hour, status=f.status, verdict=f.verdict,
                      first_action_at=f.first_action_at))
        s.commit()
    engine.dispose()
    return settings_for(tmp_path, url)


def figures(**kw: int | float) -> dict[str, object]:
    base: dict[str, object] = {"received": 0, "of_value": 0, "not_of_value": 0, "spam": 0,
                               "handled": 0, "open": 0, "median_hours_to_first_action": None,
                               "likely_spam": 0}
    received, of_value = kw.get("received", 0), kw.get("of_value", 0)
    percent = round(100 * of_value / received) if received else None
    return {**base, **kw, "of_value_percent": percent}


def report_json(settings: Settings, **kw: object) -> dict[str, object]:
    out = io.StringIO()
    assert run_report(settings, fmt="json", out=out, **kw) == 0  # type: ignore[arg-type]
    data: dict[str, object] = json.loads(out.getvalue())
    return data


def by(data: dict[str, object], dim: str) -> dict[str, dict[str, object]]:
    rows = data["by"][dim]  # type: ignore[index]
    return {r.pop("key"): r for r in rows}


def test_json_figures_match_the_hand_count(settings: Settings) -> None:
    data = report_json(settings)
    assert data["period"] == {"from": None, "to": None}
    assert data["total"] == figures(received=9, of_value=3, not_of_value=2, spam=1, handled=2,
                                    open=3, median_hours_to_first_action=4)
    assert data["total"]["of_value_percent"] == 33
    stations = by(data, "station")
    assert stations["ncs"] == {"label": "Đồn Nậm Cuổi", **figures(
        received=7, of_value=2, not_of_value=2, spam=1, handled=2, open=2,
        median_hours_to_first_action=3.5)}
    assert stations["mlt"] == {"label": "Đồn Mù Cả", **figures(
        received=2, of_value=1, open=1, median_hours_to_first_action=8)}
    categories = by(data, "category")
    assert categories["drugs"] == {"label": "Ma túy", **figures(
        received=5, of_value=3, handled=1, open=2, median_hours_to_first_action=3.5)}
    assert categories["guns"]["label"] == "Súng tự chế"  # the config's label wins
    placements = by(data, "placement")
    assert placements["ncs/cho"] == {"label": "Chợ phiên (ncs)", **figures(
        received=4, of_value=2, not_of_value=1, handled=2, open=1,
        median_hours_to_first_action=3.5)}
    assert placements["mlt/"]["received"] == 2
    assert {k: v["received"] for k, v in by(data, "month").items()} == {
        "2026-01": 6, "2026-02": 2, "2026-03": 1}


def test_periods_and_station(settings: Settings) -> None:
    january = report_json(settings, month="2026-01")
    assert january["period"] == {"from": "2026-01-01", "to": "2026-01-31"}
    assert january["total"] == figures(received=6, of_value=3, not_of_value=1, spam=1,
                                       handled=1, open=1, median_hours_to_first_action=4)
    february = report_json(settings, date_from=date(2026, 2, 1), date_to=date(2026, 2, 7))
    assert february["total"]["received"] == 2  # type: ignore[index]
    assert report_json(settings, date_to=date(2026, 1, 3))["total"]["received"] == 3  # type: ignore[index]
    assert report_json(settings, station="mlt")["total"]["received"] == 2  # type: ignore[index]


def test_csv_and_table_and_bars(settings: Settings, tmp_path: Path) -> None:
    out = io.StringIO()
    chart = tmp_path / "chart" / "briefing.png"
    assert run_report(settings, fmt="csv", chart=chart, out=out) == 0
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0])[:5] == ["Phân theo", "Mã", "Tên", "Tiếp nhận", "Có giá trị"]
    total = rows[0]
    assert (total["Phân theo"], total["Tiếp nhận"], total["Có giá trị"],
            total["Chưa xử lý xong"]) == ("Tổng cộng", "9", "3", "3")
    theft = next(r for r in rows if r["Phân theo"] == "Theo loại tin" and r["Mã"] == "theft")
    assert (theft["Tên"], theft["Không có giá trị"], theft["Tin rác"],
            theft["Trung vị giờ đến xử lý đầu"]) == ("Trộm cắp tài sản", "1", "1", "5.5")
    mlt_march = next(r for r in rows if r["Phân theo"] == "Theo tháng" and r["Mã"] == "2026-03")
    assert mlt_march["Trung vị giờ đến xử lý đầu"] == ""  # no action yet: blank, not 0
    with Image.open(chart) as image:
        assert image.format == "PNG"
        colours = {c for _, c in image.convert("RGB").getcolors(1_000_000) or []}
    assert (46, 125, 50) in colours and (198, 40, 40) in colours  # of value, spam bars

    table = io.StringIO()
    assert run_report(settings, month="2026-02", out=table) == 0
    text = table.getvalue()
    assert "Thống kê tin báo" in text and "2026-02-01 – 2026-02-28" in text
    assert "Theo loại tin" in text and "Súng tự chế" in text and "\x1b" not in text
    total_line = next(line for line in text.splitlines() if "Tổng cộng" in line)
    assert [c.strip() for c in total_line.split("│")[2:10]] == [
        "2", "0", "0%", "1", "0", "1", "1", "4.5"]

    bars = io.StringIO()
    assert run_report(settings, fmt="bars", out=bars) == 0
    drugs = next(line for line in bars.getvalue().splitlines() if line.startswith("Ma túy"))
    assert drugs.count("█") == 24 and drugs.count("░") == 16 and drugs.endswith(" 5 / 3")


def test_bad_options_exit_2_naming_the_fix(settings: Settings,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert run_report(settings, month="2026-01", date_from=date(2026, 1, 1)) == 2
    assert run_report(settings, month="2026-13") == 2
    assert run_report(settings, fmt="xml") == 2
    assert run_report(settings, station="xyz") == 2
    err = capsys.readouterr().err
    for hint in ("use one or the other", "YYYY-MM", "table, csv, json, bars",
                 "choose among mlt, ncs"):
        assert hint in err


def test_compute_is_pure_and_parse_period() -> None:
    report = compute(facts(), Period())
    assert report.total.received == 9 and report.total.median_hours_to_first_action == 4
    empty = compute([], Period())
    assert empty.total == Figures().finish() and empty.by["station"] == []
    assert parse_period(month="2024-02") == Period(date(2024, 2, 1), date(2024, 2, 29))
    assert parse_period(month="2026-12") == Period(date(2026, 12, 1), date(2026, 12, 31))
    with pytest.raises(ConfigError, match="swap them"):
        parse_period(date(2026, 2, 1), date(2026, 1, 1))


def test_the_chart_names_its_station_and_draws_vietnamese_with_its_own_font(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The title says whose figures they are; the font comes with the chart library, so
    no system font is needed for "ư", "ơ", "đ" (warnings are errors: a missing glyph
    would fail here)."""
    import matplotlib

    from mailbridge.station import report as report_module

    report = report_module.build(settings, Period(), "ncs")
    chart = tmp_path / "ncs.png"
    report_module.write_png(report, chart, "Đồn Nậm Cuổi")
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.width >= 800
    font_file = Path(report_module.chart_font(10).get_file())
    assert font_file.is_relative_to(matplotlib.get_data_path())

    titles: list[str] = []
    real = report_module.write_png

    def spy(rep: Report, path: Path, station_name: str = "") -> None:
        titles.append(station_name)
        real(rep, path, station_name)

    monkeypatch.setattr(report_module, "write_png", spy)
    assert run_report(settings, station="NCS", chart=tmp_path / "a.png", out=io.StringIO()) == 0
    assert run_report(settings, chart=tmp_path / "b.png", out=io.StringIO()) == 0
    assert titles == ["Đồn Nậm Cuổi", ""]


def test_report_into_a_reader_that_stops_early_still_writes_the_chart(
        settings: Settings, tmp_path: Path) -> None:
    """`mailbridge report --chart x.png | head`, with a reader gone before the first line:
    the chart is written, the exit is
    quiet (no BrokenPipeError traceback)."""
    import subprocess
    import sys

    chart = tmp_path / "piped.png"
    code = ("import sys, pickle; from mailbridge.station.report import run_report; "
            "settings = pickle.load(open(sys.argv[1], 'rb')); "
            "sys.exit(run_report(settings, fmt='table', chart=__import__('pathlib').Path("
            "sys.argv[2])))")
    blob = tmp_path / "settings.pickle"
    import pickle

    blob.write_bytes(pickle.dumps(settings))
    proc = subprocess.run(f"{sys.executable} -c \"{code}\" {blob} {chart} | true",
                          shell=True, capture_output=True, text=True, timeout=120,
                          check=False, cwd=Path(__file__).resolve().parents[2])
    assert chart.is_file() and chart.stat().st_size > 1000, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


@pytest.mark.parametrize(("zone", "february"), [("Asia/Ho_Chi_Minh", 2), ("UTC", 1)])
def test_months_and_days_are_the_stations_not_utcs(
        tmp_path: Path, zone: str, february: int) -> None:
    """20:00 UTC on 31 January is 03:00 on 1 February in Vietnam: February's tip there."""
    import dataclasses

    url = f"sqlite:///{tmp_path / 'tz.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as s:
        for n, at in enumerate((datetime(2026, 1, 31, 20), datetime(2026, 2, 10, 8)), start=1):
            s.add(Tip(station_id="ncs", ref=f"NCS-{n:04d}", received_category="drugs",
                      category="drugs", placement="", received_hour=at, status="new"))
        s.commit()
    engine.dispose()
    base = settings_for(tmp_path, url)
    settings = dataclasses.replace(base, ledger=dataclasses.replace(base.ledger, time_zone=zone))
    assert report_json(settings, month="2026-02")["total"]["received"] == february  # type: ignore[index]
    assert report_json(settings, month="2026-01")["total"]["received"] == 2 - february  # type: ignore[index]
    assert report_json(settings, date_from=date(2026, 2, 1), date_to=date(2026, 2, 1))[
        "total"]["received"] == february - 1  # type: ignore[index]
    months = {r["key"]: r["received"] for r in report_json(settings)["by"]["month"]}  # type: ignore[index]
    assert months == ({"2026-02": 2} if february == 2 else {"2026-01": 1, "2026-02": 1})


def test_every_station_category_and_month_is_listed_in_the_configs_order(
        settings: Settings) -> None:
    """A station with no tips is a figure too (zero), categories keep the form's order,
    and the trend has every month of the period, by station."""
    import dataclasses

    quiet = Station(id="bme", name="Đồn Bản Mế", ref_prefix="BME", mailbox="s3@example.test")
    reordered = (*BUILTIN_CATEGORIES[2:], *BUILTIN_CATEGORIES[:2])
    wider = dataclasses.replace(settings, stations={**settings.stations, "bme": quiet},
                                categories=reordered)
    data = report_json(wider, date_from=date(2026, 1, 1), date_to=date(2026, 4, 30))
    stations = by(data, "station")
    assert list(stations) == ["bme", "mlt", "ncs"]
    assert stations["bme"] == {"label": "Đồn Bản Mế", **figures()}
    assert [r["key"] for r in data["by"]["category"]] == [c.id for c in reordered]  # type: ignore[index]
    assert {k: v["received"] for k, v in by(data, "month").items()} == {
        "2026-01": 6, "2026-02": 2, "2026-03": 1, "2026-04": 0}
    trend = by(data, "station_month")
    assert len(trend) == 3 * 4 and trend["bme/2026-02"] == {
        "label": "Đồn Bản Mế 2026-02", **figures()}
    assert trend["ncs/2026-02"]["received"] == 2 and trend["mlt/2026-03"]["received"] == 1
    only = report_json(wider, station="bme")
    assert list(by(only, "station")) == ["bme"] and only["by"]["month"] == []  # type: ignore[index]


def pdf_text(path: Path) -> tuple[int, str]:
    import unicodedata

    from pypdf import PdfReader

    reader = PdfReader(path)
    text = "\n".join(page.extract_text() for page in reader.pages)
    return len(reader.pages), unicodedata.normalize("NFC", text)


def test_the_pdf_briefing_is_one_searchable_page_in_vietnamese(
        settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "briefing" / "2026-01.pdf"
    assert run_report(settings, month="2026-01", pdf=path, out=io.StringIO()) == 0
    pages, text = pdf_text(path)
    assert pages == 1
    assert "Báo cáo tin báo: Mọi đồn" in text
    assert "Thời gian: 2026-01-01 – 2026-01-31" in text
    assert ("Tiếp nhận 6 tin, 3 tin có giá trị (50%), 1 tin đã xử lý, 1 tin chưa xử lý "
            "xong") in " ".join(text.split())
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "Đồn Nậm Cuổi 5 2 40% 1 1 1 1 3" in lines, lines
    assert "Đồn Mù Cả 1 1 100% 0 0 0 0 8" in lines, lines
    assert "Súng tự chế 0 0 — 0 0 0 0 —" in lines, lines  # every category, zeros too
    assert "Tổng cộng 6 3 50% 1 1 1 1 4" in lines, lines

    named = tmp_path / "ncs.pdf"
    assert run_report(settings, station="ncs", pdf=named, out=io.StringIO()) == 0
    pages, text = pdf_text(named)
    assert pages == 1 and "Báo cáo tin báo: Đồn Nậm Cuổi" in text and "Đồn Mù Cả" not in text


def test_the_briefing_stays_one_page_for_twenty_stations_over_two_years(
        tmp_path: Path) -> None:
    """Beyond six stations the trend draws the total (lines would blur), the legend and
    the month labels still fit (a layout warning would be an error here)."""
    import dataclasses

    from mailbridge.station.report import write_pdf

    base = settings_for(tmp_path, "sqlite://")
    stations = {f"s{i:02d}": Station(id=f"s{i:02d}", name=f"Đồn Biên phòng số {i}",
                                     ref_prefix="S", mailbox="s@example.test")
                for i in range(20)}
    settings = dataclasses.replace(base, stations=stations)
    tips = [TipFacts(f"s{i % 20:02d}", "drugs", "", datetime(2025 + m // 12, m % 12 + 1, 2),
                     "new") for i in range(40) for m in range(24)]
    report = compute(tips, Period(date(2025, 1, 1), date(2026, 12, 31)), settings)
    assert len(report.by["month"]) == 24 and len(report.by["station_month"]) == 20 * 24
    path = tmp_path / "big.pdf"
    write_pdf(report, path, "")
    pages, text = pdf_text(path)
    assert pages == 1
    assert "Đồn Biên phòng số 19 48 0 0% 0 0 0 48 —" in [" ".join(x.split())
                                                        for x in text.splitlines()]
