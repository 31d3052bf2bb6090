"""The CPU cost of one tip (GET form + POST), stage by stage, and the checked total.

The real relay (``run_relay``: uvicorn, the Starlette app, the SQLite store with
synchronous=FULL, the Maildir delivery worker) in a process of its own, with the
demo-like config of ``bench_relay``, each stage's function wrapped by a timer (thread
CPU time and wall time, exclusive of the stages inside it, so nothing counts twice).
This process sends it tips one after the other with ``bench.rawhttp``'s client, as a
phone's browser does: a GET of the form, then a POST of it (multipart, the form's
enctype; or ``--urlencoded``). After a warm-up the server's utime+stime from /proc over
N tips is the total; what no stage claims (uvicorn, h11, Starlette's routing and
middleware, asyncio, the thread pool's hand-offs, the request and response objects)
is the "rest" line, so the table adds up to the total measured from outside. The
plain ``mailbridge serve``, without timers, is measured before and after, to show what
the timers cost.

    python -m bench.bench_stages [--tips 400] [--warmup 100] [--urlencoded]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.middleware.gzip import GZipResponder

from bench.bench_relay import argon2_build
from bench.procfs import tree_cpu
from bench.rawhttp import TipClient, is_receipt, split_url
from mailbridge.config import load_config
from mailbridge.core import message as message_module
from mailbridge.core.conversation import Sealer
from mailbridge.core.receipts import ReceiptHasher
from mailbridge.core.shingles import NearDuplicates
from mailbridge.demo import fill_form
from mailbridge.relay import outbox as outbox_module
from mailbridge.relay import ratelimit as ratelimit_module
from mailbridge.relay import web as web_module
from mailbridge.relay.dkim import DkimSigner, generate_key
from mailbridge.relay.server import run_relay
from mailbridge.relay.store import RelayStore
from mailbridge.relay.web import FormTokens, WebForm
from tests.e2e.support import MAILDIR_STATION, RelayProcess, free_port, write_config

ROOT = Path(__file__).resolve().parents[1]
PATH = "/s/ncs/cho"
# Every tip taken (one web worker: write_config's default where relay.workers exists).
EXTRA = "station_tips_per_hour = 100000000\ntips_in_flight = 10000\n"
TEXT = "Tin thử số {n}: có người chở hàng lậu qua suối lúc chiều tối, hai xe máy."


@dataclass
class Stage:
    cpu: float = 0.0
    wall: float = 0.0
    calls: int = 0


@dataclass
class Timers:
    """Exclusive thread CPU and wall time per stage; a stack per thread for nesting."""

    stages: dict[str, Stage] = field(default_factory=dict)
    local: threading.local = field(default_factory=threading.local)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        stack: list[list[float]] = getattr(self.local, "stack", None) or []
        self.local.stack = stack
        frame = [0.0, 0.0]  # the CPU and wall of the stages inside this one
        stack.append(frame)
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        try:
            yield
        finally:
            cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
            stack.pop()
            if stack:
                stack[-1][0] += cpu
                stack[-1][1] += wall
            with self.lock:
                entry = self.stages.setdefault(name, Stage())
                entry.cpu += cpu - frame[0]
                entry.wall += wall - frame[1]
                entry.calls += 1

    def wrap(self, name: str | Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        """*fn* timed as stage *name* (or ``name(*args)``); coroutines too."""
        label = name if callable(name) else (lambda *a, **k: name)
        if asyncio.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                with self.stage(label(*args, **kwargs)):
                    return await fn(*args, **kwargs)
            return timed_async

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(label(*args, **kwargs)):
                return fn(*args, **kwargs)
        return timed

    def clear(self) -> None:
        with self.lock:
            self.stages.clear()


def _patch(owner: Any, attr: str, timers: Timers, name: str | Callable[..., str]) -> None:
    setattr(owner, attr, timers.wrap(name, getattr(owner, attr)))


def _render_stage(_self: WebForm, _lang: str, template: str, *_a: Any, **_k: Any) -> str:
    page = {"form.html": "form page", "receipt.html": "receipt page"}.get(template, template)
    return f"{page}: template render (Jinja2)"


def instrument(timers: Timers) -> None:
    """Wrap each stage's function where the relay looks it up (classes, module globals)."""
    stages: list[tuple[Any, str, str | Callable[..., str]]] = [
        (WebForm, "render", _render_stage),
        (FormTokens, "issue", "form token issue (HMAC)"),
        (WebForm, "_read_form", "POST body read and form parse"),
        (web_module, "clean_text", "text cleaning (NFC, controls)"),
        (FormTokens, "genuine", "form token check (HMAC)"),
        (FormTokens, "consume", "form token consume (HMAC)"),
        (FormTokens, "used", "form token: the used token's digest (HMAC)"),
        (RelayStore, "use_form_token", "used token commit (SQLite FULL)"),
        (ratelimit_module.RateLimiter, "hit", "rate limit per network"),
        (getattr(ratelimit_module, "StationLimit", None), "hit", "station limit"),
        (ReceiptHasher, "derive", "receipt hash (Argon2id t=1 m=8 MiB)"),
        (web_module, "new_receipt_code", "receipt code (random digits)"),
        (NearDuplicates, "look", "near-duplicate check (shingles)"),
        (NearDuplicates, "remember", "near-duplicate check (shingles)"),
        (NearDuplicates, "seen", "near-duplicate check (shingles)"),
        (Sealer, "new_keys", "conversation keys (Curve25519, SecretBox)"),
        (message_module, "_build", "compose: MIME build"),
        (message_module, "body_digest", "compose: body digest (SHA-256)"),
        (message_module, "_signature_header", "compose: Ed25519 signature"),
        (message_module, "verify_contract", "compose: check (verify the signature)"),
        (web_module, "compose", "compose: serialise, parse back"),
        (RelayStore, "accept", "accept: two commits (token, count, ref; outbox, tip, keys)"),
        (GZipResponder, "_compress_body", "gzip (GZipMiddleware)"),
        (RelayStore, "claim_due", "delivery: claim"),
        (outbox_module, "deliver_maildir", "delivery: Maildir write (fsync)"),
        (RelayStore, "mark_delivered", "delivery: mark delivered"),
        (RelayStore, "purge_freed", "delivery: purge the body, WAL checkpoint"),
        (RelayStore, "next_due", "delivery: next due row (a read)"),
    ]
    for owner, attr, name in stages:  # a stage renamed elsewhere is left out, not an error
        if owner is not None and hasattr(owner, attr):
            _patch(owner, attr, timers, name)


async def _send(base: str, count: int, multipart: bool, first: int) -> int:
    host, port = split_url(base)
    client = TipClient(host, port, PATH, multipart=multipart)
    acked = 0
    try:
        for n in range(first, first + count):
            page = await client.form()
            acked += is_receipt(await client.post(client.post_request(page.body,
                                                                      TEXT.format(n=n))))
    finally:
        await client.close()
    return acked


async def _page(base: str) -> bytes:
    client = TipClient(*split_url(base), PATH)
    try:
        return (await client.form()).body
    finally:
        await client.close()


async def _send_httpx(base: str, count: int, first: int) -> int:
    """The same tips as bench_relay's client sent them before (httpx, URL-encoded)."""
    acked = 0
    async with httpx.AsyncClient(timeout=30) as client:
        for n in range(first, first + count):
            page = await client.get(base + PATH)
            target, fields = fill_form(page.text, base + PATH, TEXT.format(n=n))
            reply = await client.post(target, data=fields)
            acked += reply.status_code == 200 and "class=code>" in reply.text
    return acked


def serve_instrumented(config: Path, out: Path) -> None:
    """The relay with timers (run in its own process): SIGUSR1 starts the count again,
    SIGUSR2 writes it to *out* as JSON."""
    settings = load_config(config)
    timers = Timers()
    instrument(timers)

    def dump(*_: object) -> None:
        with timers.lock:
            data = {name: [s.cpu, s.wall, s.calls] for name, s in timers.stages.items()}
        out.with_suffix(".tmp").write_text(json.dumps(data))
        out.with_suffix(".tmp").rename(out)

    signal.signal(signal.SIGUSR1, lambda *_: timers.clear())
    signal.signal(signal.SIGUSR2, dump)
    asyncio.run(run_relay(settings, handle_signals=True))


@dataclass(frozen=True)
class Served:
    cpu: float  # the server's CPU seconds over the measured tips, delivery included
    acked: int
    stages: dict[str, Stage]  # empty without timers
    client_ms: dict[str, float]  # the load generator's own CPU per tip, by client
    page: bytes = b""  # the last form page, as sent before compression


def run_serve(folder: Path, tips: int, warmup: int, multipart: bool, *,
              timed: bool = False, clients: bool = False) -> Served:
    """The relay in its own process (plain ``mailbridge serve``, or with timers); its CPU
    over *tips*, each delivered. With *clients*, then each client's own CPU per tip over
    *tips* more (URL-encoded, as bench_relay sends)."""
    port = free_port()
    config = write_config(folder, port, MAILDIR_STATION, extra=EXTRA)
    out = folder / "stages.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBRIDGE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = ([sys.executable, "-m", "bench.bench_stages", "--serve", str(config), str(out)]
               if timed else None)
    relay = RelayProcess(config, port, command=command, env=env).start()
    maildir = folder / "mail" / "ncs" / "new"

    def delivered(count: int) -> None:
        deadline = time.monotonic() + 60
        while len(os.listdir(maildir)) < count and time.monotonic() < deadline:
            time.sleep(0.02)

    try:
        assert relay.proc is not None
        asyncio.run(_send(relay.base, warmup, multipart, 0))
        delivered(warmup)
        if timed:
            relay.proc.send_signal(signal.SIGUSR1)
        before = tree_cpu(relay.proc.pid)
        acked = asyncio.run(_send(relay.base, tips, multipart, warmup))
        delivered(warmup + tips)
        cpu = tree_cpu(relay.proc.pid) - before
        stages: dict[str, Stage] = {}
        if timed:
            relay.proc.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            stages = {name: Stage(*values) for name, values in json.loads(out.read_text()).items()}
        client_ms: dict[str, float] = {}
        if clients:
            sent = warmup + tips
            cpu0 = time.process_time()
            asyncio.run(_send_httpx(relay.base, tips, sent))
            cpu1 = time.process_time()
            asyncio.run(_send(relay.base, tips, False, sent + tips))
            client_ms = {"httpx (bench_relay before)": (cpu1 - cpu0) / tips * 1000,
                         "rawhttp (bench_relay now)": (time.process_time() - cpu1) / tips * 1000}
        return Served(cpu, acked, stages, client_ms, asyncio.run(_page(relay.base)))
    finally:
        relay.stop()


def dkim_ms(count: int = 200) -> float:
    """DKIM-signing one composed tip (done at delivery, when a key is configured)."""
    signer = DkimSigner("relay.example.test", "mb", generate_key())
    data = (TEXT.format(n=0) * 10).encode("utf-8")
    sample = (b"From: tips@relay.example.test\r\nTo: tips@ncs.example.test\r\n"
              b"Subject: [NCS-0001]\r\nMessage-ID: <a@relay.example.test>\r\n\r\n" + data)
    signer.sign(sample)
    cpu0 = time.thread_time()
    for _ in range(count):
        signer.sign(sample)
    return (time.thread_time() - cpu0) / count * 1000


def gzip_levels(page: bytes, count: int = 500) -> str:
    """The form page compressed at levels 1, 6 (GZipMiddleware's here) and 9: bytes and
    CPU per page."""
    figures = []
    for level in (1, 6, 9):
        cpu0 = time.thread_time()
        for _ in range(count):
            compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            size = len(compressor.compress(page) + compressor.flush())
        figures.append(f"level {level}: {size:,} B, "
                       f"{(time.thread_time() - cpu0) / count * 1000:.3f} ms")
    return f"form page of {len(page):,} B gzipped, " + "; ".join(figures)


def print_table(timed: Served, plain: list[Served], tips: int) -> None:
    """The stages, biggest first, then the rest and the total of the same process."""
    rows = sorted(timed.stages.items(), key=lambda kv: -kv[1].cpu)
    total = timed.cpu

    def line(name: str, cpu: float, wall: str = "", note: str = "") -> None:
        print(f"{name:58} {cpu / tips * 1000:10.2f} {wall:>11} {cpu / total:6.1%}{note}")

    print(f"{'stage':58} {'CPU ms/tip':>10} {'wall ms/tip':>11} {'share':>6}")
    for name, s in rows:
        line(name, s.cpu, f"{s.wall / tips * 1000:.2f}")
    line("rest: uvicorn, h11, Starlette, asyncio, threads, objects",
         total - sum(s.cpu for _, s in rows))
    line("total: the server's utime+stime from /proc", total)
    each = ", ".join(f"{p.cpu / tips * 1000:.1f}" for p in plain)
    print(f"plain mailbridge serve (no timers), before and after: {each} ms CPU per tip")


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve_instrumented(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tips", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--urlencoded", action="store_true",
                        help="POST URL-encoded (as bench_relay) instead of multipart")
    args = parser.parse_args()
    multipart = not args.urlencoded
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"{args.tips} tips after {args.warmup} warm-up, one at a time, POST "
          f"{'multipart' if multipart else 'URL-encoded'}; load average {load}")
    with tempfile.TemporaryDirectory(prefix="mb-stages-") as tmp:
        first = run_serve(Path(tmp) / "plain", args.tips, args.warmup, multipart)
        timed = run_serve(Path(tmp) / "timed", args.tips, args.warmup, multipart, timed=True)
        last = run_serve(Path(tmp) / "plain2", args.tips, args.warmup, multipart,
                         clients=True)
    runs = [first, timed, last]
    if any(r.acked != args.tips for r in runs):
        print(f"acknowledged of {args.tips}: {', '.join(str(r.acked) for r in runs)}")
    print_table(timed, [first, last], args.tips)
    for name, ms in last.client_ms.items():
        print(f"load generator's own CPU per tip, {name}: {ms:.2f} ms")
    print(gzip_levels(last.page))
    print(f"DKIM signing at delivery (not configured here; RSA-2048): {dkim_ms():.2f} ms CPU")
    print("OpenPGP: not configured here (python -m bench.bench_openpgp measures it)")
    print(f"Argon2 binding: {argon2_build()}")
    print(f"load average: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
