"""A flood on one station, and what another tipster meanwhile sees.

Runs the real ``mailbridge serve`` (two Maildir stations, relay.station_tips_per_hour
= --limit). A flood of --flood tips from --clients concurrent clients goes to one
station while one other tipster sends --others tips, one at a time, to the other
station; then the same tipster alone, for comparison. Prints numbers; asserts nothing.

    python -m bench.bench_flood [--flood 2000] [--clients 16] [--limit 60] [--others 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from mailbridge.demo import fill_form
from tests.e2e.support import MAILDIR_STATION, RelayProcess, free_port, maildir_files, write_config
from tests.e2e.test_flood import OTHER_STATION


async def _tip(client: httpx.AsyncClient, base: str, path: str, n: int) -> tuple[int, float]:
    """GET the form and POST it as a phone does: (status, seconds for both)."""
    start = time.perf_counter()
    page = await client.get(base + path)
    target, fields = fill_form(page.text, base + path, f"Tin số {n}: hàng lậu qua suối.")
    reply = await client.post(target, data=fields)
    return reply.status_code, time.perf_counter() - start


async def _other(base: str, count: int) -> list[float]:
    async with httpx.AsyncClient(timeout=60) as client:
        return [(await _tip(client, base, "/s/abc/cho", n))[1] for n in range(count)]


async def _flood(base: str, count: int, clients: int) -> list[int]:
    statuses: list[int] = []
    numbers = iter(range(count))

    async def worker() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            for n in numbers:
                statuses.append((await _tip(client, base, "/s/ncs/cho", n))[0])

    await asyncio.gather(*(worker() for _ in range(clients)))
    return statuses


def _line(label: str, seconds: list[float]) -> str:
    q = statistics.quantiles(seconds, n=100)
    return (f"{label}: form + submit p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms "
            f"({len(seconds)} tips)")


async def _run(base: str, args: argparse.Namespace) -> None:
    alone = await _other(base, args.others)
    start = time.perf_counter()
    flood_task = asyncio.create_task(_flood(base, args.flood, args.clients))
    during = await _other(base, args.others)
    statuses = await flood_task
    wall = time.perf_counter() - start
    accepted = statuses.count(200)
    print(_line("another tipster, relay quiet", alone))
    print(_line(f"another tipster, during a flood of {args.flood} tips from "
                f"{args.clients} clients", during))
    print(f"flood: {len(statuses)} tips in {wall:.1f} s = {len(statuses) / wall:.0f} tips/s "
          f"answered; {accepted} accepted (limit {args.limit}/h), "
          f"{statuses.count(503)} refused 503, other statuses "
          f"{sorted({s for s in statuses if s not in (200, 503)})}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flood", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--others", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp:
        port = free_port()
        config = write_config(Path(tmp), port, MAILDIR_STATION + OTHER_STATION,
                              extra=f"station_tips_per_hour = {args.limit}\n")
        relay = RelayProcess(config, port).start()
        try:
            asyncio.run(_run(relay.base, args))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(
                    maildir_files(Path(tmp) / "mail" / "ncs")) < min(args.limit, args.flood):
                time.sleep(0.1)
            print(f"the flooded station's mailbox: {len(maildir_files(Path(tmp) / 'mail' / 'ncs'))}"
                  f" messages")
        finally:
            relay.stop()


if __name__ == "__main__":
    main()
