"""Relay figures: receipt hash cost, acknowledgement latency under load, submit-to-mailbox.

Runs the real ``mailbridge serve`` process. Prints numbers; asserts nothing. The load
generator shares the relay's cores, so its client is ``bench.rawhttp``'s (keep-alive
connections, requests built as bytes, the receipt code checked in each 200) rather than
httpx, and it prints its own CPU per tip.

    python -m bench.bench_relay [--clients 8] [--seconds 10] [--rate 100] [--mailbox 20]
                                [--in-flight N] [--workers N] [--repeat N]

``--in-flight`` sets relay.tips_in_flight (0: no bound, as before load shedding). Busy
answers (503) are counted apart; the relay's peak RSS (VmHWM) is read from /proc.
``--repeat N`` runs both loops N times, each on a freshly started relay, and ends with
their median and range: a box shared with other work changes speed within minutes, and
one run says little about it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import distribution
from pathlib import Path

import httpx

from bench.procfs import status_kib, tree_cpu
from bench.rawhttp import TipClient, is_receipt, split_url
from mailbridge.core.receipts import ReceiptHasher, derive_key, new_receipt_code
from mailbridge.demo import fill_form
from tests.e2e.support import (
    MAILDIR_STATION,
    RelayProcess,
    free_port,
    smtp_station,
    write_config,
)

FORM_PATH = "/s/ncs/cho"


def bench_hash(n: int = 200) -> None:
    hasher = ReceiptHasher(derive_key("b" * 32, "receipt"))
    codes = [new_receipt_code() for _ in range(n)]
    start = time.perf_counter()
    for code in codes:
        hasher.hash(code)
    per = (time.perf_counter() - start) / n
    print(f"receipt hash (Argon2id t=1 m=8MiB p=1): {per * 1000:.2f} ms, {argon2_build()}")


def argon2_build() -> str:
    """Which build of the Argon2 binding runs: the locked wheel (manylinux, SSE2) or one
    built on this box by scripts/argon2-avx2."""
    wheel = distribution("argon2-cffi-bindings").read_text("WHEEL") or ""
    return "the locked wheel" if "manylinux" in wheel else "built here (make argon2-avx2)"


async def _one_tip(client: TipClient, n: int) -> tuple[int, float]:
    """(status, seconds from the POST's send to its answer's end): 200 a receipt (the
    code is in the page), 503 busy; anything else raises."""
    page = await client.form()
    if page.status != 200:
        raise RuntimeError(f"form page: HTTP {page.status}")
    request = client.post_request(page.body, f"Tin thử số {n}: hàng lậu.")
    start = time.perf_counter()
    reply = await client.post(request)
    elapsed = time.perf_counter() - start
    if reply.status == 200 and not is_receipt(reply):
        raise RuntimeError("HTTP 200 without a receipt code")
    if reply.status not in (200, 503):
        raise RuntimeError(f"HTTP {reply.status}")
    return reply.status, elapsed


def _ms(latencies: list[float]) -> str:
    if len(latencies) < 2:
        return "n/a"
    q = statistics.quantiles(latencies, n=100)
    return f"p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms"


@dataclass(frozen=True)
class Run:
    """One loop's figures, for ``--repeat``'s summary."""

    tips_per_second: float
    ack_p99_ms: float
    busy: int


def _report(label: str, answers: list[tuple[int, float]], wall: float, cpu: float,
            relay_cpu: float) -> Run:
    """*cpu*: the load generator's own CPU seconds (this process) over the run;
    *relay_cpu*: the relay's (its processes and threads, from /proc)."""
    acked = [t for status, t in answers if status == 200]
    busy = [t for status, t in answers if status == 503]
    print(f"{label}: {len(acked)} tips in {wall:.1f} s = {len(acked) / wall:.0f} tips/s; "
          f"ack latency {_ms(acked)}; {len(busy)} busy answers (503), {_ms(busy)}; "
          f"every answer {_ms([t for _, t in answers])}; load generator CPU "
          f"{cpu / max(1, len(answers)) * 1000:.2f} ms per tip ({cpu / wall:.0%} of a core); "
          f"relay CPU {relay_cpu / max(1, len(acked)) * 1000:.1f} ms per acknowledged tip "
          f"({relay_cpu / wall:.2f} cores)")
    p99 = statistics.quantiles(acked, n=100)[98] * 1000 if len(acked) > 1 else float("nan")
    return Run(len(acked) / wall, p99, len(busy))


async def closed_loop(base: str, relay_pid: int, clients: int, seconds: float) -> Run:
    latencies: list[tuple[int, float]] = []
    deadline = time.perf_counter() + seconds
    host, port = split_url(base)

    async def worker(w: int) -> None:
        client = TipClient(host, port, FORM_PATH)
        try:
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                latencies.append(await _one_tip(client, w * 100000 + n))
        finally:
            await client.close()

    start, cpu, relay_cpu = time.perf_counter(), time.process_time(), tree_cpu(relay_pid)
    await asyncio.gather(*(worker(i) for i in range(clients)))
    return _report(f"{clients} concurrent clients", latencies, time.perf_counter() - start,
                   time.process_time() - cpu, tree_cpu(relay_pid) - relay_cpu)


async def open_loop(base: str, relay_pid: int, rate: float, seconds: float) -> Run:
    host, port = split_url(base)
    idle: list[TipClient] = []  # keep-alive connections between tips, as httpx's pool

    async def tip(n: int) -> tuple[int, float]:
        client = idle.pop() if idle else TipClient(host, port, FORM_PATH)
        try:
            answer = await _one_tip(client, n)
        except BaseException:
            await client.close()
            raise
        idle.append(client)
        return answer

    tasks = []
    start, cpu, relay_cpu = time.perf_counter(), time.process_time(), tree_cpu(relay_pid)
    for n in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(asyncio.wait_for(tip(n), 30)))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [r for r in results if isinstance(r, tuple)]
    failed = [r for r in results if not isinstance(r, tuple)]
    run = _report(f"offered {rate:.0f} tips/s", latencies, time.perf_counter() - start,
                  time.process_time() - cpu, tree_cpu(relay_pid) - relay_cpu)
    for client in idle:
        await client.close()
    if failed:
        kinds = sorted({type(f).__name__ for f in failed})
        print(f"  {len(failed)} of {len(results)} tips failed on the client side: "
              f"{', '.join(kinds)}")
    return run


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


def _surge(args: argparse.Namespace) -> tuple[Run, Run]:
    """One run of both loops on a new relay: (closed loop, offered rate)."""
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp:
        port = free_port()
        # One station takes every tip here: its hourly limit is not what is measured.
        extra = f"station_tips_per_hour = 100000000\ntips_in_flight = {args.in_flight or 10000}\n"
        relay = RelayProcess(write_config(Path(tmp), port, MAILDIR_STATION, extra=extra,
                                          workers=args.workers or None), port).start()
        try:
            assert relay.proc is not None
            started = status_kib(relay.proc.pid) / 1024
            print(f"relay RSS once started (VmRSS): {started:.0f} MiB")
            closed = asyncio.run(closed_loop(relay.base, relay.proc.pid, args.clients,
                                             args.seconds))
            offered = asyncio.run(open_loop(relay.base, relay.proc.pid, args.rate, args.seconds))
            peak = status_kib(relay.proc.pid, "VmHWM:") / 1024
            print(f"relay peak RSS (VmHWM, from /proc): {peak:.0f} MiB")
        finally:
            relay.stop()
    return closed, offered


def _spread(values: Sequence[float], unit: str) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.0f} ({low:.0f}–{high:.0f}){' ' + unit if unit else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--mailbox", type=int, default=20, help="tips for the mailbox figure")
    parser.add_argument("--in-flight", type=int, default=12,
                        help="relay.tips_in_flight (0: unbounded, as before load shedding)")
    parser.add_argument("--workers", type=int, default=1,
                        help="relay.workers, web worker processes (0: the config's default, "
                             "one per usable CPU, at most 4)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of both loops, each on a new relay; then their median")
    args = parser.parse_args()
    bench_hash()
    runs = [_surge(args) for _ in range(max(1, args.repeat))]
    if len(runs) > 1:
        print(f"over {len(runs)} runs, median (range): {args.clients} clients "
              f"{_spread([c.tips_per_second for c, _ in runs], 'tips/s')}; offered "
              f"{args.rate:.0f} tips/s: ack p99 {_spread([o.ack_p99_ms for _, o in runs], 'ms')}, "
              f"busy answers {_spread([o.busy for _, o in runs], '')}")
    if args.mailbox:
        bench_mailbox(args.mailbox)


if __name__ == "__main__":
    main()
