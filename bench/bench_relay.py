"""Relay figures: receipt hash cost, acknowledgement latency under load, submit-to-mailbox.

Runs the real ``mailbridge serve`` process. Prints numbers; asserts nothing.

    python -m bench.bench_relay [--clients 8] [--seconds 10] [--rate 100] [--mailbox 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from mailbridge.core.receipts import ReceiptHasher, derive_key, new_receipt_code
from mailbridge.demo import fill_form
from tests.e2e.support import (
    MAILDIR_STATION,
    RelayProcess,
    free_port,
    smtp_station,
    write_config,
)


def bench_hash(n: int = 200) -> None:
    hasher = ReceiptHasher(derive_key("b" * 32, "receipt"))
    codes = [new_receipt_code() for _ in range(n)]
    start = time.perf_counter()
    for code in codes:
        hasher.hash(code)
    per = (time.perf_counter() - start) / n
    print(f"receipt hash (Argon2id t=1 m=8MiB p=1): {per * 1000:.2f} ms")


async def _one_tip(client: httpx.AsyncClient, base: str, n: int) -> float:
    page = await client.get(f"{base}/s/ncs/cho")
    target, fields = fill_form(page.text, f"{base}/s/ncs/cho", f"Tin thử số {n}: hàng lậu.")
    start = time.perf_counter()
    reply = await client.post(target, data=fields)
    elapsed = time.perf_counter() - start
    if reply.status_code != 200:
        raise RuntimeError(f"HTTP {reply.status_code}")
    return elapsed


def _report(label: str, latencies: list[float], wall: float) -> None:
    q = statistics.quantiles(latencies, n=100)
    print(f"{label}: {len(latencies)} tips in {wall:.1f} s = {len(latencies) / wall:.0f} tips/s; "
          f"ack latency p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms")


async def closed_loop(base: str, clients: int, seconds: float) -> None:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                latencies.append(await _one_tip(client, base, w * 100000 + n))

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    _report(f"{clients} concurrent clients", latencies, time.perf_counter() - start)


async def open_loop(base: str, rate: float, seconds: float) -> None:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        tasks = []
        start = time.perf_counter()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(_one_tip(client, base, n)))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        latencies = [r for r in results if isinstance(r, float)]
        failed = [r for r in results if not isinstance(r, float)]
        _report(f"offered {rate:.0f} tips/s", latencies, time.perf_counter() - start)
        if failed:
            kinds = sorted({type(f).__name__ for f in failed})
            print(f"  {len(failed)} of {len(results)} tips failed on the client side: "
                  f"{', '.join(kinds)}")


def bench_mailbox(count: int) -> None:
    """Submit through the relay to a real Postfix + Dovecot; time until IMAP sees each tip."""
    from tests.servers.mailstack import MailStack

    root = Path(tempfile.mkdtemp(prefix="mb-bench-", dir="/tmp"))
    stack = MailStack(root / "stack", domains=["example.test"])
    stack.install()
    stack.start()
    relay: RelayProcess | None = None
    try:
        stack.add_user("station1@example.test", "secret")
        port = free_port()
        config = write_config(root / "relay", port, smtp_station(stack))
        with (root / "relay" / ".env").open("a") as env:
            env.write("STATION_SMTP_PASSWORD=secret\n")
        relay = RelayProcess(config, port).start()
        imap = stack.imap_client("station1@example.test", "secret")
        imap.select_folder("INBOX", readonly=True)
        lat: list[float] = []
        with httpx.Client(timeout=30) as client:
            for n in range(count):
                page = client.get(f"{relay.base}/s/ncs/cho")
                target, fields = fill_form(page.text, f"{relay.base}/s/ncs/cho", f"Tin {n}")
                start = time.perf_counter()
                client.post(target, data=fields).raise_for_status()
                while len(imap.search(["ALL"])) < n + 1:
                    time.sleep(0.005)
                lat.append(time.perf_counter() - start)
        imap.logout()
        q = statistics.quantiles(lat, n=20)
        print(f"submit to station mailbox via Postfix+Dovecot ({count} tips, one at a time): "
              f"median {statistics.median(lat) * 1000:.0f} ms, p95 {q[18] * 1000:.0f} ms")
    finally:
        if relay is not None:
            relay.stop()
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--mailbox", type=int, default=20, help="tips for the mailbox figure")
    args = parser.parse_args()
    bench_hash()
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp:
        port = free_port()
        relay = RelayProcess(write_config(Path(tmp), port, MAILDIR_STATION), port).start()
        try:
            asyncio.run(closed_loop(relay.base, args.clients, args.seconds))
            asyncio.run(open_loop(relay.base, args.rate, args.seconds))
        finally:
            relay.stop()
    if args.mailbox:
        bench_mailbox(args.mailbox)


if __name__ == "__main__":
    main()
