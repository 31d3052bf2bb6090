"""Outbox figures: accept latency (commit included) and delivery throughput.

    .venv/bin/python bench/bench_outbox.py [--tips 2000] [--threads 4] [--database URL]
                                           [--read 50000]

Without --database it uses a fresh SQLite file (WAL, synchronous=FULL) in a
temporary folder. Delivery is measured into a Maildir (empty, then with --read messages
already read in its cur/) and over SMTP to an aiosmtpd sink on 127.0.0.1 (no TLS), so
the figures are the relay's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailbridge.relay.outbox import DeliveryWorker
from mailbridge.relay.store import RelayStore
from tests.relay.outbox_driver import (
    maildir_station,
    make_settings,
    smtp_station,
    submit,
)

TEXT = "Có người lạ mang hàng qua suối gần bản lúc chiều tối. " * 8


class Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK"


def accept_many(store: RelayStore, station: Any, tips: int, threads: int,
                rate: float = 0.0) -> list[float]:
    """Accept ``tips`` over ``threads``; at ``rate`` tips/s in total when given (latency is
    then counted from each tip's scheduled time, so queueing is included)."""
    latencies: list[float] = []
    lock = threading.Lock()
    t0 = time.perf_counter()

    def work(n: int, offset: int) -> None:
        mine = []
        for i in range(n):
            due = t0 + (i * threads + offset) / rate if rate else time.perf_counter()
            time.sleep(max(0.0, due - time.perf_counter()))
            submit(store, station, TEXT)
            mine.append(time.perf_counter() - due)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=work, args=(tips // threads, k)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies


def report(label: str, latencies: list[float], elapsed: float) -> None:
    q = statistics.quantiles(latencies, n=100)
    print(f"{label}: {len(latencies)} accepts in {elapsed:.2f} s = "
          f"{len(latencies) / elapsed:.0f}/s; p50 {q[49] * 1000:.1f} ms, "
          f"p99 {q[98] * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")


def drain(worker: DeliveryWorker, label: str) -> str:
    """Deliver every due row; "LABEL: N in S s = R/s"."""
    async def run() -> int:
        total = 0
        while n := await worker.deliver_due():
            total += n
        return total
    start = time.perf_counter()
    delivered = asyncio.run(run())
    elapsed = time.perf_counter() - start
    return f"{label}: {delivered} in {elapsed:.2f} s = {delivered / elapsed:.0f}/s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tips", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--database", default="")
    parser.add_argument("--read", type=int, default=50000,
                        help="messages already read in the Maildir's cur/ for the second "
                             "delivery figure (a station's mailbox that officers use)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    url = args.database or f"sqlite:///{folder / 'relay.db'}"
    store = RelayStore(url)
    store.upgrade()
    print(f"database: {store.safe_url}")

    mail = maildir_station("md", folder / "Maildir")
    for threads, rate in ((1, 0.0), (args.threads, 0.0), (args.threads, 100.0)):
        start = time.perf_counter()
        latencies = accept_many(store, mail, args.tips, threads, rate)
        label = f"at {rate:.0f}/s offered" if rate else "flat out"
        report(f"accept, {threads} thread(s), {label}", latencies, time.perf_counter() - start)

    worker = DeliveryWorker(make_settings(url, mail), store, batch=50)
    print(drain(worker, "maildir delivery"))
    cur = folder / "Maildir" / "cur"
    for n in range(args.read):  # as a mail client leaves them: name:2,FLAGS
        (cur / f"1700000000.M{n}P1.host:2,S").touch()
    accept_many(store, mail, args.tips, args.threads)
    print(drain(worker, f"maildir delivery, {args.read} read messages in cur/"))

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        smtp = smtp_station("sm", port)
        for concurrency in (1, 4, 8):
            accept_many(store, smtp, args.tips // 2, args.threads)
            worker = DeliveryWorker(make_settings(url, smtp), store, batch=50,
                                    concurrency=concurrency)
            print(drain(worker, f"smtp delivery, concurrency {concurrency}")
                  + f" (sink got {sink.count})")
    finally:
        controller.stop()
        store.close()


if __name__ == "__main__":
    main()
