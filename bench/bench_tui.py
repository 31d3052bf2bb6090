"""Officers' UI on a big ledger: seed N tips, then time opening the list and filtering.

    .venv/bin/python -m bench.bench_tui [--tips 100000] [--url postgresql://...]

Prints, for the real Textual app run headless: time from start to the first
page on screen ("open"), and for each filter the time from the change to the
new list on screen; then the bare query times (count + first page) behind them.
Budget (docs/DESIGN): open <= 1 s, filter <= 100 ms on 100k tips.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

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
from mailbridge.station.ledger.db import make_engine, session_factory, upgrade
from mailbridge.station.ledger.models import Message, Tip
from mailbridge.station.tui.access import resolve_access
from mailbridge.station.tui.app import LedgerApp
from mailbridge.station.tui.data import TipFilter, count_tips, page_tips
from mailbridge.station.tui.tiplist import PAGE, TipList

_TEXT = ("người lạ chở hàng qua suối nửa đêm ma túy chợ phiên súng tự chế xe máy không "
         "biển số đường mòn biên giới nhà dân tạm trú trâu nương ngô cửa khẩu bản làng "
         "thuốc phiện buôn lậu pháo hoa gỗ quý thuốc lá điện thoại lạ mặt")
WORDS = tuple(_TEXT.split())
STATIONS = ("ncs", "mlt", "pxa", "shx")
PLACEMENTS = ("cho", "truong", "tramyte", "nhavanhoa", "")
STATUSES = ("new", "verifying", "of_value", "not_of_value", "spam", "handled")


def seed(url: str, n: int) -> None:
    rng = random.Random(7)
    engine = make_engine(url)
    start = datetime(2024, 1, 1)
    chunk = 5000
    with engine.begin() as conn:
        for base in range(0, n, chunk):
            msgs, tips = [], []
            for i in range(base, min(base + chunk, n)):
                station = STATIONS[i % len(STATIONS)]
                body = " ".join(rng.choices(WORDS, k=rng.randint(8, 60)))
                if i % 5000 == 4999:
                    body += " cá sấu"  # a rare phrase for the search figures
                hour = start + timedelta(hours=i // 3)
                ref = f"{station.upper()}-{i:06d}"
                msgs.append({"id": i + 1, "station_id": station, "message_id": f"<{ref}@r>",
                             "raw_sha256": f"{i:064d}", "size": len(body), "kind": "tip",
                             "subject": f"[{ref}] tin báo", "text_body": body, "sender": "",
                             "search_text": search_form(body),
                             "received_hour": hour, "in_reply_to": "", "references": "",
                             "indexed_at": hour})
                tips.append({"id": i + 1, "station_id": station, "ref": ref, "ref_seq": i,
                             "message_pk": i + 1,
                             "received_category": rng.choice(BUILTIN_CATEGORIES).id,
                             "category": rng.choice(BUILTIN_CATEGORIES).id,
                             "placement": rng.choice(PLACEMENTS), "received_hour": hour,
                             "subject": f"[{ref}] tin báo", "preview": body[:60],
                             "status": rng.choice(STATUSES), "status_reason": "",
                             "assignee": "", "updated_at": hour, "verdict": ""})
            conn.execute(insert(Message), msgs)
            conn.execute(insert(Tip), tips)
        conn.execute(update(Message).values(tip_id=Message.id))  # tip i+1 owns message i+1
    engine.dispose()


def settings_for(url: str, tmp: Path) -> Settings:
    stations = {sid: Station(id=sid, name=sid.upper(), ref_prefix=sid.upper(),
                             mailbox=f"{sid}@example.test",
                             placements=tuple(Placement(p, p) for p in PLACEMENTS if p),
                             officers={"bench": "Cán bộ"}) for sid in STATIONS}
    relay = RelaySettings(address="tips@relay.example.test", domain="relay.example.test",
                          database="sqlite://", secret=Secret("s" * 32))
    return Settings(tmp / "mailbridge.toml", relay, LedgerSettings(url, tmp), stations,
                    BUILTIN_CATEGORIES)


async def ui_figures(settings: Settings, sessions: Any) -> list[tuple[str, float]]:
    app = LedgerApp(settings, resolve_access(settings, user="bench"), sessions)
    figures: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    async with app.run_test(size=(160, 40)) as pilot:
        tips = app.query_one(TipList)
        while tips.generation == 0:
            await asyncio.sleep(0.001)
        await pilot.pause()
        figures.append((f"open: first page of {tips.total} tips on screen",
                        time.perf_counter() - t0))
        while not app.query("#f-text"):  # the filter bar comes after the first page
            await asyncio.sleep(0.001)
        await pilot.pause()

        async def change(label: str, action: Callable[[], None]) -> None:
            generation = tips.generation
            t = time.perf_counter()
            action()
            while tips.generation == generation:
                await asyncio.sleep(0.001)
            first = time.perf_counter() - t
            while any(w.group == "list" and not w.is_finished for w in app.workers):
                await asyncio.sleep(0.001)
            figures.append((f"filter: {label} -> {tips.total} (first page in the list after "
                            f"{first * 1000:.1f} ms; this figure: with the count)",
                            time.perf_counter() - t))

        def setter(wid: str, value: Any) -> Callable[[], None]:
            return lambda: setattr(app.query_one(wid), "value", value)

        await change("status verifying", setter("#f-status", "verifying"))
        await change("+ category drugs", setter("#f-category", "drugs"))
        await change("+ station ncs", setter("#f-station", "ncs"))
        await change("+ placement cho", setter("#f-placement", "ncs/cho"))
        await change("reset", app.action_reset_filters)
        def one_month() -> None:
            setter("#f-from", "2024-03-01")()
            setter("#f-to", "2024-03-31")()

        await change("date range (one month)", one_month)
        await change("reset", app.action_reset_filters)
        await change("search 'cá sấu' (rare)", setter("#f-text", "cá sấu"))
        await change("search 'ma túy' (common)", setter("#f-text", "ma túy"))
        await change("reset", app.action_reset_filters)
        t = time.perf_counter()
        tips.action_jump(-1)
        while tips.row(tips.total - 1) is None:
            await asyncio.sleep(0.001)
        offset = (tips.total - 1) // PAGE * PAGE
        figures.append((f"scroll: jump to the last row (page at offset {offset})",
                        time.perf_counter() - t))
    return figures


def query_figures(sessions: Any, repeat: int = 5) -> list[tuple[str, float]]:
    stations = STATIONS
    cases = {
        "all": TipFilter(stations),
        "status": TipFilter(stations, status="verifying"),
        "status+category+station+placement": TipFilter(
            stations, status="verifying", category="drugs", station="ncs", placement="cho"),
        "search rare": TipFilter(stations, text="cá sấu"),
        "search common": TipFilter(stations, text="ma túy"),
    }
    out = []
    with sessions() as s:
        for label, f in cases.items():
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                count_tips(s, f)
                page_tips(s, f, 0, PAGE)
                times.append(time.perf_counter() - t)
            out.append((f"query {label}: count + first page (median of {repeat})",
                        statistics.median(times)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tips", type=int, default=100_000)
    parser.add_argument("--url", help="ledger URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-tui-"))
    url = args.url or f"sqlite:///{tmp / 'ledger.db'}"
    upgrade(url)
    t = time.perf_counter()
    seed(url, args.tips)
    print(f"seeded {args.tips} tips in {time.perf_counter() - t:.1f} s ({url.split(':')[0]})")
    engine = make_engine(url)
    sessions = session_factory(engine)
    settings = settings_for(url, tmp)
    for label, seconds in asyncio.run(ui_figures(settings, sessions)):
        print(f"{seconds * 1000:8.1f} ms  {label}")
    for label, seconds in query_figures(sessions):
        print(f"{seconds * 1000:8.1f} ms  {label}")
    engine.dispose()


if __name__ == "__main__":
    main()
