"""Figures for command: how many tips came in, and what they were worth.

Per station, category, placement and month: received, of value, not of value,
spam, still open, and the median hours from receipt to an officer's first
action. A handled tip counts by its last verdict (``Tip.verdict``). Output as
a rich table, CSV, JSON, a terminal bar chart, or a PNG for a briefing.

The figures are computed in Python from one narrow query, so SQLite and
PostgreSQL give the same answer by construction.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import Settings
from ..errors import ConfigError, MailbridgeError
from .ledger.db import make_engine, session_factory, translated
from .ledger.models import Status, Tip
from .localtime import DEFAULT_ZONE, local, utc_bounds
from .tui import strings as S

DIMENSIONS = ("station", "category", "placement", "month")
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


@dataclass
class Figures:
    received: int = 0
    of_value: int = 0
    not_of_value: int = 0
    spam: int = 0
    open: int = 0
    median_hours_to_first_action: float | None = None
    _delays: list[float] = field(default_factory=list, repr=False)

    def add(self, tip: TipFacts) -> None:
        self.received += 1
        verdict = tip.verdict or tip.status  # rows from before the verdict column
        if verdict in _VERDICTS:
            setattr(self, verdict, getattr(self, verdict) + 1)
        if tip.status in (Status.NEW, Status.VERIFYING):
            self.open += 1
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
        return data


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
    return {"station": tip.station_id, "category": tip.category,
            "placement": f"{tip.station_id}/{tip.placement}",
            "month": local(tip.received_hour, zone_name).strftime("%Y-%m")}


def compute(tips: Iterable[TipFacts], period: Period = Period(),
            settings: Settings | None = None) -> Report:
    """Aggregate *tips* (pure: no database) into totals and the four breakdowns."""
    total = Figures()
    groups: dict[str, dict[str, Figures]] = {d: {} for d in DIMENSIONS}
    zone_name = settings.ledger.time_zone if settings is not None else DEFAULT_ZONE
    for tip in tips:
        total.add(tip)
        for dim, key in _keys(tip, zone_name).items():
            groups[dim].setdefault(key, Figures()).add(tip)
    by = {dim: [Row(key, _label(settings, dim, key), figs.finish())
                for key, figs in sorted(groups[dim].items())] for dim in DIMENSIONS}
    return Report(period, total.finish(), by)


def _label(settings: Settings | None, dim: str, key: str) -> str:
    if dim == "category":
        return S.category_label(settings, key)
    if dim == "placement":
        station, _, placement = key.partition("/")
        return f"{S.placement_label(settings, station, placement)} ({station})"
    if dim == "station" and settings is not None:
        st = settings.station(key)
        return st.name if st is not None else key
    return key


@translated("reading the ledger")
def load_facts(session: Session, period: Period, station: str | None = None,
               zone_name: str = DEFAULT_ZONE) -> list[TipFacts]:
    """One narrow query over the tips received in *period* (the station's days)."""
    lo, hi = period.bounds(zone_name)
    query = select(Tip.station_id, Tip.category, Tip.placement, Tip.received_hour, Tip.status,
                   Tip.verdict, Tip.first_action_at)
    if lo is not None:
        query = query.where(Tip.received_hour >= lo)
    if hi is not None:
        query = query.where(Tip.received_hour < hi)
    if station is not None:
        query = query.where(Tip.station_id == station)
    return [TipFacts(*row) for row in session.execute(query)]


# ---- output -------------------------------------------------------------------------

COLUMNS = ("received", "of_value", "not_of_value", "spam", "open",
           "median_hours_to_first_action")
_HEADERS = (S.RECEIVED, S.OF_VALUE, S.NOT_OF_VALUE, S.SPAM, S.OPEN, S.MEDIAN)


def _period_text(period: Period) -> str:
    if period.start is None and period.end is None:
        return S.PERIOD.format(start=S.PERIOD_ALL, end="").rstrip(" –")
    return S.PERIOD.format(start=period.start or "…", end=period.end or "…")


def _cells(figs: Figures) -> list[str]:
    median = figs.median_hours_to_first_action
    return [str(figs.received), str(figs.of_value), str(figs.not_of_value), str(figs.spam),
            str(figs.open), "—" if median is None else f"{median:g}"]


def write_table(report: Report, out: TextIO) -> None:
    console = Console(file=out, width=120, highlight=False, emoji=False, markup=False)
    console.print(Text(f"{S.REPORT_TITLE}. {_period_text(report.period)}", style="bold"))
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
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dimension", "key", "label", *COLUMNS])
    writer.writerow(["total", "", S.TOTAL, *_csv(report.total)])
    for dim in DIMENSIONS:
        for row in report.by[dim]:
            writer.writerow([dim, row.key, row.label, *_csv(row.figures)])


def _csv(figs: Figures) -> list[object]:
    data = figs.as_dict()
    return ["" if data[c] is None else data[c] for c in COLUMNS]


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
    import matplotlib
    from matplotlib.font_manager import FontProperties

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return FontProperties(fname=Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name,
                          size=size)


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
    return compute(facts, period, settings)


def run_report(settings: Settings, *, fmt: str = "table", date_from: date | None = None,
               date_to: date | None = None, month: str | None = None,
               station: str | None = None, chart: Path | None = None,
               out: TextIO = sys.stdout) -> int:
    """``mailbridge report``: print the figures in *fmt*, and a PNG to *chart* if given."""
    try:
        if fmt not in WRITERS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if station is not None and settings.station(station) is None:
            raise ConfigError(f"--station {station!r} is not configured: choose among "
                              f"{', '.join(sorted(settings.stations))}")
        period = parse_period(date_from, date_to, month)
        report = build(settings, period, station.lower() if station else None)
        if chart is not None:  # first: a reader that stops early (| head) must not lose it
            named = settings.station(station) if station else None
            write_png(report, chart, named.name if named else "")
        WRITERS[fmt](report, out)
        out.flush()
    except MailbridgeError as exc:
        print(f"mailbridge report: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader (head, less) has all it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return 0

