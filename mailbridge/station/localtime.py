"""The station's own clock: the ledger keeps hours in UTC, officers and command read
and count them in the station's time zone (``ledger.time_zone``, Vietnam's by default),
so a month is the station's month, not UTC's seven hours off. Pure."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from ..config import DEFAULT_TIME_ZONE as DEFAULT_ZONE

__all__ = ["DEFAULT_ZONE", "local", "offset_label", "parse_day", "show_hour", "utc_bounds"]


@cache
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local(at: datetime, zone_name: str) -> datetime:
    """A ledger time (naive UTC) as the station's wall clock."""
    return at.replace(tzinfo=UTC).astimezone(zone(zone_name))


def show_hour(at: datetime | None, zone_name: str) -> str:
    """``2026-12-01 15h``, in the station's time zone."""
    return local(at, zone_name).strftime("%Y-%m-%d %Hh") if at else "—"


def offset_label(zone_name: str) -> str:
    """``+07``: what the times on screen are, said once in a column heading."""
    return datetime.now(zone(zone_name)).strftime("%z")[:3]


_DAY_FIRST = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})")


def parse_day(text: str) -> date:
    """A day as officers write it: ``1/12/2026`` or ``01/12/2026`` (day first, as in
    Vietnam), or ISO ``2026-12-01``; ValueError for anything else."""
    value = text.strip()
    found = _DAY_FIRST.fullmatch(value)
    if found:
        day, month, year = (int(part) for part in found.groups())
        return date(year, month, day)
    return date.fromisoformat(value)


def utc_bounds(start: date | None, end: date | None, zone_name: str
               ) -> tuple[datetime | None, datetime | None]:
    """The station's days *start* to *end* (inclusive) as naive UTC [lo, hi)."""

    def midnight(day: date) -> datetime:
        at = datetime(day.year, day.month, day.day, tzinfo=zone(zone_name))
        return at.astimezone(UTC).replace(tzinfo=None)

    return (midnight(start) if start else None,
            midnight(end + timedelta(days=1)) if end else None)
