"""Figures for command: how many tips came in, and what they were worth.

Per station, category, placement, month and station by month (the trend):
received, of value (and its share), not of value, spam, handled, still open,
and the median hours from receipt to an officer's first action. A handled tip
counts by its last verdict (``Tip.verdict``). Every configured station and
category is listed, with zeros when nothing came in, categories in the
config's order, and every month of the period. Output as a rich table, CSV,
JSON, a terminal bar chart, a PNG, or a one-page PDF briefing (fpdf2).

The figures are computed in Python from one narrow query, so SQLite and
PostgreSQL give the same answer by construction.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import Settings
from ..errors import ConfigError, MailbridgeError
from ..fonts import dejavu
from .ledger.db import make_engine, session_factory, translated
from .ledger.models import Status, Tip
from .localtime import DEFAULT_ZONE, local, show_hour, utc_bounds
from .tui import strings as S

DIMENSIONS = ("station", "category", "placement", "month", "station_month")
FORMATS = ("table", "csv", "json", "bars")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class Period:
    """Inclusive dates on the tip's received hour; None is open-ended."""

    start: date | None = None
    end: date | None = None

    def bounds(self, zone_name: str = DEFAULT_ZONE) -> tuple[datetime | None, datetime | None]:
        """The period's days in the station's time zone, as the ledger's naive UTC."""
        return utc_bounds(self.start, self.end, zone_name)


def parse_period(date_from: date | None = None, date_to: date | None = None,
                 month: str | None = None) -> Period:
    """``--month YYYY-MM`` or ``--from``/``--to``; ConfigError names the fix."""
    if month is not None:
        if date_from is not None or date_to is not None:
            raise ConfigError("--month cannot be combined with --from/--to: use one or the other")
        m = _MONTH.match(month.strip())
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise ConfigError(f"--month must be YYYY-MM, got {month!r}")
        first = date(int(m.group(1)), int(m.group(2)), 1)
        last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        return Period(first, last)
    if date_from and date_to and date_from > date_to:
        raise ConfigError(f"--from {date_from} is after --to {date_to}: swap them")
    return Period(date_from, date_to)


@dataclass(frozen=True)
class TipFacts:
    """The few columns of a tip that the figures need."""

    station_id: str
    category: str
    placement: str
    received_hour: datetime
    status: str
    verdict: str = ""
    first_action_at: datetime | None = None
    likely_spam: str = ""


@dataclass
class Figures:
    received: int = 0
    of_value: int = 0
    not_of_value: int = 0
    spam: int = 0
    handled: int = 0
    open: int = 0
    median_hours_to_first_action: float | None = None
    likely_spam: int = 0  # marked by the relay: many copies of one text
    _delays: list[float] = field(default_factory=list, repr=False)

    @property
    def of_value_percent(self) -> int | None:
        """The share of tips received that were of value; None when none came in."""
        return round(100 * self.of_value / self.received) if self.received else None

    def add(self, tip: TipFacts) -> None:
        self.received += 1
        verdict = tip.verdict or tip.status  # rows from before the verdict column
        if verdict in _VERDICTS:
            setattr(self, verdict, getattr(self, verdict) + 1)
        if tip.status == Status.HANDLED:
            self.handled += 1
        if tip.status in (Status.NEW, Status.VERIFYING):
            self.open += 1
        if tip.likely_spam:
            self.likely_spam += 1
        if tip.first_action_at is not None:
            delay = (tip.first_action_at - tip.received_hour).total_seconds() / 3600
            self._delays.append(max(0.0, delay))

    def finish(self) -> Figures:
        if self._delays:
            self.median_hours_to_first_action = round(statistics.median(self._delays), 1)
        return self

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_delays")
        return {**data, "of_value_percent": self.of_value_percent}


# Status values that are also Figures fields.
_VERDICTS = frozenset({Status.OF_VALUE.value, Status.NOT_OF_VALUE.value, Status.SPAM.value})


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    figures: Figures


@dataclass(frozen=True)
class Report:
    period: Period
    total: Figures
    by: dict[str, list[Row]]


def _keys(tip: TipFacts, zone_name: str) -> dict[str, str]:
    month = local(tip.received_hour, zone_name).strftime("%Y-%m")
    return {"station": tip.station_id, "category": tip.category,
            "placement": f"{tip.station_id}/{tip.placement}",
            "month": month, "station_month": f"{tip.station_id}/{month}"}


def _months(first: date, last: date) -> list[str]:
    """``YYYY-MM`` of every month from *first* to *last*: a trend has no gaps."""
    months, year, month = [], first.year, first.month
    while (year, month) <= (last.year, last.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def _empty_rows(period: Period, seen_months: Iterable[str], stations: Iterable[str],
                categories: Iterable[str]) -> dict[str, list[str]]:
    """The keys listed even with nothing in them: every station, category and month."""
    seen = sorted(seen_months)
    first = period.start or (date.fromisoformat(seen[0] + "-01") if seen else None)
    last = period.end or (date.fromisoformat(seen[-1] + "-01") if seen else None)
    months = _months(first, last) if first and last else []
    stations = list(stations)
    return {"station": stations, "category": list(categories), "placement": [],
            "month": months, "station_month": [f"{s}/{m}" for s in stations for m in months]}


def compute(tips: Iterable[TipFacts], period: Period = Period(),
            settings: Settings | None = None, stations: Iterable[str] | None = None) -> Report:
    """Aggregate *tips* (pure: no database) into totals and the breakdowns.

    *stations* (default: every configured one) are listed even with no tips, as are
    the configured categories, in the config's order, and every month of the period."""
    total = Figures()
    groups: dict[str, dict[str, Figures]] = {d: {} for d in DIMENSIONS}
    zone_name = settings.ledger.time_zone if settings is not None else DEFAULT_ZONE
    for tip in tips:
        total.add(tip)
        for dim, key in _keys(tip, zone_name).items():
            groups[dim].setdefault(key, Figures()).add(tip)
    configured = list(settings.stations) if settings is not None else []
    order = [c.id for c in settings.categories] if settings is not None else []
    for dim, keys in _empty_rows(period, groups["month"],
                                 configured if stations is None else stations, order).items():
        for key in keys:
            groups[dim].setdefault(key, Figures())
    rank = {cid: i for i, cid in enumerate(order)}

    def sort_key(dim: str, key: str) -> tuple[int, str]:
        return (rank.get(key, len(rank)), key) if dim == "category" else (0, key)

    by = {dim: [Row(key, _label(settings, dim, key), groups[dim][key].finish())
                for key in sorted(groups[dim], key=partial(sort_key, dim))]
          for dim in DIMENSIONS}
    return Report(period, total.finish(), by)


def _label(settings: Settings | None, dim: str, key: str) -> str:
    if dim == "category":
        return S.category_label(settings, key)
    if dim == "placement":
        station, _, placement = key.partition("/")
        return f"{S.placement_label(settings, station, placement)} ({station})"
    if dim == "station_month":
        station, _, month = key.partition("/")
        return f"{_label(settings, 'station', station)} {month}"
    if dim == "station":
        return S.station_label(settings, key)
    return key


@translated("reading the ledger")
def load_facts(session: Session, period: Period, station: str | None = None,
               zone_name: str = DEFAULT_ZONE) -> list[TipFacts]:
    """One narrow query over the tips received in *period* (the station's days)."""
    lo, hi = period.bounds(zone_name)
    query = select(Tip.station_id, Tip.category, Tip.placement, Tip.received_hour, Tip.status,
                   Tip.verdict, Tip.first_action_at, Tip.likely_spam)
    if lo is not None:
        query = query.where(Tip.received_hour >= lo)
    if hi is not None:
        query = query.where(Tip.received_hour < hi)
    if station is not None:
        query = query.where(Tip.station_id == station)
    return [TipFacts(*row) for row in session.execute(query)]


# ---- output -------------------------------------------------------------------------

COLUMNS = ("received", "of_value", "of_value_percent", "not_of_value", "spam", "handled",
           "open", "median_hours_to_first_action")
_HEADERS = (S.RECEIVED, S.OF_VALUE, S.OF_VALUE_PERCENT, S.NOT_OF_VALUE, S.SPAM, S.HANDLED,
            S.OPEN, S.MEDIAN)


def _period_text(period: Period) -> str:
    if period.start is None and period.end is None:
        return S.PERIOD.format(start=S.PERIOD_ALL, end="").rstrip(" –")
    return S.PERIOD.format(start=period.start or "…", end=period.end or "…")


def _cells(figs: Figures) -> list[str]:
    median, percent = figs.median_hours_to_first_action, figs.of_value_percent
    return [str(figs.received), str(figs.of_value), "—" if percent is None else f"{percent}%",
            str(figs.not_of_value), str(figs.spam), str(figs.handled), str(figs.open),
            "—" if median is None else f"{median:g}"]


def write_table(report: Report, out: TextIO) -> None:
    console = Console(file=out, width=120, highlight=False, emoji=False, markup=False)
    console.print(Text(f"{S.REPORT_TITLE}. {_period_text(report.period)}", style="bold"))
    console.print(Text(f"{S.LIKELY_SPAM_COUNT}: {report.total.likely_spam}"))
    for dim in DIMENSIONS:
        table = Table(title=S.BY[dim], title_justify="left")
        table.add_column("")
        for header in _HEADERS:
            table.add_column(header, justify="right")
        for row in report.by[dim]:
            table.add_row(Text(row.label), *_cells(row.figures))
        table.add_row(Text(S.TOTAL, style="bold"), *_cells(report.total), end_section=True)
        console.print(table)


def write_csv(report: Report, out: TextIO) -> None:
    """Vietnamese headers and groupings for Excel users; the keys stay ids (JSON keeps
    ids throughout)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([S.CSV_BY, S.CSV_KEY, S.CSV_LABEL, *_HEADERS, S.LIKELY_SPAM_COUNT])
    writer.writerow([S.TOTAL, "", S.TOTAL, *_csv(report.total)])
    for dim in DIMENSIONS:
        for row in report.by[dim]:
            writer.writerow([S.BY[dim], row.key, row.label, *_csv(row.figures)])


def _csv(figs: Figures) -> list[object]:
    data = figs.as_dict()
    return ["" if data[c] is None else data[c] for c in (*COLUMNS, "likely_spam")]


def write_json(report: Report, out: TextIO) -> None:
    data = {
        "period": {"from": report.period.start and report.period.start.isoformat(),
                   "to": report.period.end and report.period.end.isoformat()},
        "total": report.total.as_dict(),
        "by": {dim: [{"key": r.key, "label": r.label, **r.figures.as_dict()}
                     for r in report.by[dim]] for dim in DIMENSIONS},
    }
    json.dump(data, out, ensure_ascii=False, indent=2)
    out.write("\n")


def write_bars(report: Report, out: TextIO, width: int = 40) -> None:
    """A terminal bar chart: one bar per category and month, of-value part in full blocks."""
    console = Console(file=out, width=120, highlight=False, emoji=False, markup=False)
    console.print(Text(f"{S.REPORT_TITLE}. {_period_text(report.period)}", style="bold"))
    console.print(Text(f"█ {S.OF_VALUE}   ░ {S.RECEIVED}"))
    for dim in ("category", "month"):
        rows = report.by[dim]
        console.print(Text(S.BY[dim], style="bold"))
        top = max((r.figures.received for r in rows), default=0) or 1
        pad = max((len(r.label) for r in rows), default=0)
        for r in rows:
            full = round(width * r.figures.of_value / top)
            rest = max(round(width * r.figures.received / top) - full, 0)
            line = Text(f"{r.label:<{pad}} ")
            line.append("█" * full, style="green")
            line.append("░" * rest, style="grey50")
            line.append(f" {r.figures.received} / {r.figures.of_value}")
            console.print(line)


_PNG_COLOURS = (("of_value", S.OF_VALUE, "#2e7d32"),
                ("not_of_value", S.NOT_OF_VALUE, "#9e9e9e"),
                ("spam", S.SPAM, "#c62828"),
                ("open", S.OPEN, "#ffb300"))


def chart_font(size: float, *, bold: bool = False) -> Any:
    """DejaVu Sans from matplotlib's own files: every Vietnamese letter, on any box,
    whatever fonts the system has (a missing font drew boxes)."""
    from matplotlib.font_manager import FontProperties

    return FontProperties(fname=dejavu(bold=bold), size=size)


def write_png(report: Report, path: Path, station_name: str = "") -> None:
    """A briefing chart: one stacked bar per category (of value, not, spam, open),
    titled with the station (or every station) and the period."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = report.by["category"]
    font = chart_font(11)
    figure = Figure(figsize=(10, 1.6 + 0.45 * max(len(rows), 1)), dpi=100,
                    layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    labels = [r.label for r in rows]
    left = [0] * len(rows)
    for key, name, colour in _PNG_COLOURS:
        values = [r.figures.as_dict()[key] for r in rows]
        ax.barh(labels, values, left=left, color=colour, label=name, height=0.6)
        left = [a + b for a, b in zip(left, values, strict=True)]
    for y, row in enumerate(rows):
        ax.text(left[y], y, f" {row.figures.received}", va="center", fontproperties=font)
    ax.invert_yaxis()
    ax.set_yticks(range(len(rows)), labels, fontproperties=font)
    for tick in ax.get_xticklabels():
        tick.set_fontproperties(font)
    ax.spines[["top", "right"]].set_visible(False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # tips come whole
    title = f"{S.REPORT_TITLE}: {station_name or S.ANY_STATION}. {_period_text(report.period)}"
    figure.suptitle(title, fontproperties=chart_font(14, bold=True), x=0.01, ha="left")
    figure.legend(prop=font, ncols=len(_PNG_COLOURS), loc="outside lower left", frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(path, format="png")
    except OSError as exc:
        raise ConfigError(f"cannot write the chart to {path}: {exc}; choose a writable "
                          f"--chart path") from exc


TREND_LINES = 6  # stations drawn one line each in the briefing's trend


def trend_png(report: Report, *, width: float = 7.5, height: float = 2.6) -> bytes:
    """The trend for a briefing: tips received per month, one line per station (the
    total beyond ``TREND_LINES`` stations, where lines would blur), and the month's tips
    of value; DejaVu Sans from ``chart_font``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    font = chart_font(9)
    months = [r.key for r in report.by["month"]]
    figure = Figure(figsize=(width, height), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    stations = report.by["station"]
    if len(stations) > TREND_LINES:
        ax.plot(months, [r.figures.received for r in report.by["month"]], marker="o",
                label=S.TOTAL)
    for station in stations if len(stations) <= TREND_LINES else ():
        counts = [r.figures.received for r in report.by["station_month"]
                  if r.key.partition("/")[0] == station.key]
        ax.plot(months, counts, marker="o", label=station.label)
    ax.plot(months, [r.figures.of_value for r in report.by["month"]], color="#2e7d32",
            linestyle="--", marker="s", label=S.OF_VALUE)
    ax.set_xticks(range(len(months)), months, fontproperties=font,
                  rotation=45 if len(months) > 12 else 0)  # two years still readable
    for tick in ax.get_yticklabels():
        tick.set_fontproperties(font)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(S.TREND, fontproperties=chart_font(10, bold=True), loc="left")
    figure.legend(prop=font, ncols=4, loc="outside lower left", frameon=False)
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def write_pdf(report: Report, path: Path, station_name: str = "",
              made_at: str = "") -> None:
    """One A4 page for command, in Vietnamese: the totals, the monthly trend and the
    table by station and by category. Text is real text in DejaVu Sans (the chart's
    font file), so the page can be searched and copied."""
    pdf = new_pdf()
    pdf.add_page()
    pdf.set_font("DejaVu", "B", 15)
    text_line(pdf, 8, S.BRIEFING_TITLE.format(station=station_name or S.ANY_STATION))
    pdf.set_font("DejaVu", "", 10)
    text_line(pdf, 6, _period_text(report.period) + (
        f". {S.MADE_AT.format(at=made_at)}" if made_at else ""))
    total, percent = report.total, report.total.of_value_percent
    pdf.set_font("DejaVu", "B", 11)
    text_line(pdf, 7, S.BRIEFING_TOTALS.format(
        received=total.received, of_value=total.of_value, handled=total.handled,
        open=total.open, percent="—" if percent is None else f"{percent}%"))
    pdf.ln(1)
    pdf.image(io.BytesIO(trend_png(report)), w=pdf.epw)
    for dim in ("station", "category"):
        pdf.ln(2)
        pdf.set_font("DejaVu", "B", 11)
        pdf.cell(0, 7, S.BY[dim], new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", "", 8)
        widths = (46, *(18,) * len(_HEADERS))
        with pdf.table(col_widths=widths, text_align=("LEFT", *("RIGHT",) * len(_HEADERS)),
                       line_height=4.5, first_row_as_headings=True) as table:
            table.row(("", *_HEADERS))
            for row in report.by[dim]:
                table.row((row.label, *_cells(row.figures)))
            table.row((S.TOTAL, *_cells(report.total)))
    save_pdf(pdf, path, "--pdf")


def new_pdf(footer: str = "") -> Any:
    """An A4 fpdf2 document with DejaVu Sans (regular and bold) from matplotlib's files:
    Vietnamese on any box, embedded as a subset so the text stays text. fpdf2 logs the
    letters a font lacks, quoting them: a tipster's words never go to a log. A *footer*
    (with ``{page}`` and ``{pages}``) goes on every page, so loose sheets stay in order."""
    import logging

    from fpdf import FPDF

    logging.getLogger("fpdf").setLevel(logging.ERROR)

    class Document(FPDF):
        def footer(self) -> None:
            if footer:
                self.set_y(-10)
                self.set_font("DejaVu", "", 8)
                self.cell(0, 5, footer.format(page=self.page_no(), pages="{nb}"),
                          align="R")

    pdf = Document(format="A4")
    pdf.set_margins(12, 12, 12)
    pdf.set_auto_page_break(True, margin=14)
    pdf.add_font("DejaVu", "", chart_font(10).get_file())
    pdf.add_font("DejaVu", "B", chart_font(10, bold=True).get_file())
    pdf.set_creator("mailbridge")
    return pdf


def text_line(pdf: Any, height: float, text: str) -> None:
    """A paragraph across the page, wrapped, the next one starting below at the margin."""
    pdf.multi_cell(0, height, text, new_x="LMARGIN", new_y="NEXT")


def save_pdf(pdf: Any, path: Path, option: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pdf.output(str(path))
    except OSError as exc:
        raise ConfigError(f"cannot write the PDF to {path}: {exc}; choose a writable "
                          f"{option} path") from exc


WRITERS: dict[str, Callable[[Report, TextIO], None]] = {
    "table": write_table, "csv": write_csv, "json": write_json, "bars": write_bars,
}


def build(settings: Settings, period: Period, station: str | None = None,
          engine_url: str | None = None) -> Report:
    """Read the ledger named by the settings and compute the report."""
    engine = make_engine(engine_url or settings.ledger.database)
    try:
        with session_factory(engine)() as session:
            facts = load_facts(session, period, station, settings.ledger.time_zone)
    finally:
        engine.dispose()
    return compute(facts, period, settings, [station] if station else None)


def run_report(settings: Settings, *, fmt: str = "table", date_from: date | None = None,
               date_to: date | None = None, month: str | None = None,
               station: str | None = None, chart: Path | None = None,
               pdf: Path | None = None, out: TextIO = sys.stdout) -> int:
    """``mailbridge report``: print the figures in *fmt*, a PNG to *chart* and the
    briefing page to *pdf* if given."""
    try:
        if fmt not in WRITERS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if station is not None and settings.station(station) is None:
            raise ConfigError(f"--station {station!r} is not configured: choose among "
                              f"{', '.join(sorted(settings.stations))}")
        period = parse_period(date_from, date_to, month)
        report = build(settings, period, station.lower() if station else None)
        named = S.station_label(settings, station.lower()) if station else ""
        if chart is not None:  # first: a reader that stops early (| head) must not lose it
            write_png(report, chart, named)
        if pdf is not None:
            write_pdf(report, pdf, named,
                      show_hour(datetime.now(UTC).replace(tzinfo=None),
                                settings.ledger.time_zone))
        WRITERS[fmt](report, out)
        out.flush()
    except MailbridgeError as exc:
        print(f"mailbridge report: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader (head, less) has all it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return 0

