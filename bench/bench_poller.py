"""Poller benchmark on a real Postfix + Dovecot stack (started here, on loopback).

Prints, for one seeded mailbox of N messages (default 20,000):
- first index by the poller vs. a raw imapclient bulk ``BODY.PEEK[]`` fetch of the
  same mailbox in the same run, on loopback and through a 50 ms RTT delay proxy;
- an unchanged poll: IMAP commands sent and time;
- delivery-to-ledger latency via IDLE (SMTP accept -> tip row);
- RSS while indexing (the poller and its parser process), sampled over the
  message count (should stay flat).

    .venv/bin/python bench/bench_poller.py [--messages 20000] [--rtt 0.05]
    .venv/bin/python bench/bench_poller.py --rss [--messages 100000] [--memory 1000 160 96]

``--rss`` runs each first index in a process of its own, once per ledger.memory_mb
given, and reads from outside (/proc) the resident memory of that process and of its
parser processes while it indexes: each one's peak, and the peak of their sum.
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imapclient import IMAPClient  # noqa: E402

from bench.delayproxy import DelayProxyProcess  # noqa: E402
from bench.procfs import status_kib  # noqa: E402
from mailbridge.station.ledger.models import Tip  # noqa: E402
from mailbridge.station.poller import parse  # noqa: E402
from mailbridge.station.poller.budget import batches_for  # noqa: E402
from mailbridge.station.poller.imap import ImapConnection  # noqa: E402
from mailbridge.station.poller.sync import DEFAULT_MEMORY_MB, ImapPoller  # noqa: E402
from mailbridge.station.records import Counts  # noqa: E402
from tests.servers.mailstack import MailStack  # noqa: E402
from tests.station.poller_helpers import (  # noqa: E402
    PASSWORD,
    RELAY,
    RELAY_ID,
    Ledger,
    imap_settings,
    plain,
    seed_maildir,
    tip,
)

ADDRESS = "bench@example.test"
PARSER = parse.__name__.encode()  # in a parser process's command line


def rss_mib() -> float:
    """This process plus the poller's parser process (its child), in MiB."""
    me = str(os.getpid())
    children = [p.parent.name for p in Path("/proc").glob("[0-9]*/stat") if _is_parser(p, me)]
    return (status_kib(me) + sum(status_kib(c) for c in children)) / 1024


def _is_parser(stat: Path, parent: str) -> bool:
    try:
        ppid = stat.read_text().rpartition(")")[2].split()[1]
        return ppid == parent and PARSER in (stat.parent / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False


def messages(n: int) -> list[bytes]:
    text = "Có người lạ chở hàng qua đường mòn gần mốc biên giới vào ban đêm. " * 20
    out = []
    for i in range(n):
        if i % 10 < 7:
            out.append(tip(f"NCS-{i + 1:05d}", f"{i} {text}"))
        else:
            out.append(plain(f"thư thường {i}", f"{i} " + "nội dung thư " * 150))
    return out


def raw_fetch(host: str, port: int) -> tuple[float, int]:
    """The yardstick: search ALL, then UID FETCH BODY.PEEK[] in chunks of the default's
    count (the mail seeded here fills a chunk by count)."""
    started = time.perf_counter()
    client = IMAPClient(host, port=port, ssl=False, timeout=60)
    client.login(ADDRESS, PASSWORD)
    client.select_folder("INBOX", readonly=True)
    uids = client.search("ALL")
    total = 0
    chunk = batches_for(DEFAULT_MEMORY_MB).messages
    for i in range(0, len(uids), chunk):
        data = client.fetch(uids[i:i + chunk], ["BODY.PEEK[]"])
        total += sum(len(d[b"BODY[]"]) for d in data.values())
    client.logout()
    return time.perf_counter() - started, total


def index(stack: MailStack, workdir: Path, name: str, port: int,
          rss: list[tuple[int, float]] | None = None) -> tuple[float, Counts, Ledger]:
    ledger = Ledger(f"sqlite:///{workdir}/{name}.db", workdir / f"{name}-att", ADDRESS)
    poller = ledger.poller(imap_settings(stack, ADDRESS, port=port, timeout=60))
    if rss is not None:
        poller.progress = lambda _folder, done, _total: rss.append((done, rss_mib()))
    started = time.perf_counter()
    counts = poller.poll()
    elapsed = time.perf_counter() - started
    poller.conn.close()
    return elapsed, counts, ledger


def unchanged(stack: MailStack, ledger: Ledger, port: int) -> tuple[int, float]:
    poller = ledger.poller(imap_settings(stack, ADDRESS, port=port))
    poller.conn.connect()
    poller.conn.sent.clear()
    started = time.perf_counter()
    counts = poller.poll()
    elapsed = time.perf_counter() - started
    assert not counts.changed()
    sent = len(poller.conn.sent)
    poller.conn.close()
    return sent, elapsed


def idle_latency(stack: MailStack, ledger: Ledger, rounds: int) -> list[tuple[float, float]]:
    """Per delivery: (SMTP accept -> the server's IDLE announcement, -> the tip's row)."""
    poller = ledger.poller(imap_settings(stack, ADDRESS))
    woken: list[float] = []
    idle_wait = poller.conn.idle_wait

    def timed_idle_wait(seconds: float) -> bool:
        changed = idle_wait(seconds)
        woken.append(time.perf_counter())
        return changed
    poller.conn.idle_wait = timed_idle_wait  # type: ignore[method-assign]
    stop = threading.Event()
    ready = threading.Event()
    thread = threading.Thread(target=poller.run_forever, daemon=True, kwargs={
        "stop": stop.is_set, "report": lambda _c: ready.set(), "idle_renew": 60.0})
    thread.start()
    ready.wait(60)
    latencies = []
    for i in range(rounds):
        time.sleep(0.3)  # let the poller get back into IDLE
        ref = f"LAT-{i + 1:04d}"
        woken.clear()
        with smtplib.SMTP(stack.host, stack.smtp_port, timeout=10) as smtp:
            smtp.sendmail(RELAY, [ADDRESS], tip(ref, "độ trễ"))
            accepted = time.perf_counter()
        # An indexed lookup of this one ref: a COUNT over all tips every few ms would
        # eat a core of its own on a big ledger and slow the poller it measures.
        while not ledger.count(Tip, Tip.ref == ref):
            time.sleep(0.01)
        indexed = time.perf_counter()
        announced = woken[0] if woken else indexed
        latencies.append((announced - accepted, indexed - accepted))
    stop.set()
    with smtplib.SMTP(stack.host, stack.smtp_port, timeout=10) as smtp:
        smtp.sendmail(RELAY, [ADDRESS], tip("LAT-9999", "dừng"))  # ends the IDLE
    thread.join(30)
    return latencies


def _child_index(port: int, workdir: Path, memory_mb: int) -> None:
    """The measured process of ``--rss``: one first index with ledger.memory_mb's sizing."""
    stack = MailStack(workdir / "stack", domains=["example.test"])
    ledger = Ledger(f"sqlite:///{workdir}/rss-{memory_mb}.db", workdir / f"rss-{memory_mb}-att",
                    ADDRESS)
    poller = ImapPoller(ImapConnection(imap_settings(stack, ADDRESS, port=port, timeout=60)),
                        ledger.store, relay=RELAY_ID, max_message_bytes=2 * 1024 * 1024,
                        memory_mb=memory_mb)
    started = time.perf_counter()
    counts = poller.poll()
    print(f"{time.perf_counter() - started:.2f} {counts.new} {poller.parser_processes}")
    poller.conn.close()
    ledger.close()


def rss_run(stack: MailStack, workdir: Path, memory_mb: int, n: int) -> None:
    """Index in a child process; sample its and its parsers' VmRSS/VmHWM from /proc."""
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_poller", "--child", str(stack.imap_port),
         str(workdir), str(memory_mb)], stdout=subprocess.PIPE, cwd=ROOT, text=True)
    me = str(child.pid)
    peaks: dict[str, int] = {}
    peak_sum = 0
    while child.poll() is None:
        pids = [me] + [p.parent.name for p in Path("/proc").glob("[0-9]*/stat")
                       if _is_parser(p, me)]
        peak_sum = max(peak_sum, sum(status_kib(pid) for pid in pids))
        for pid in pids:
            peaks[pid] = max(peaks.get(pid, 0), status_kib(pid, "VmHWM:"))
        time.sleep(0.1)  # sampling, not synchronisation
    assert child.stdout is not None
    elapsed, new, parsers = child.stdout.read().split()
    each = ", ".join(f"{'poller' if pid == me else 'parser'} {kib / 1024:.0f}"
                     for pid, kib in peaks.items())
    print(f"ledger.memory_mb = {memory_mb}: {parsers} parser process(es); {new} indexed in "
          f"{float(elapsed):.1f} s = {n / float(elapsed):.0f} msg/s; summed RSS peak "
          f"{peak_sum / 1024:.0f} MiB (each process's peak, MiB: {each})")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child_index(int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rtt", type=float, default=0.05, help="delay proxy round trip (s)")
    parser.add_argument("--latency-rounds", type=int, default=10)
    parser.add_argument("--rss", action="store_true",
                        help="only the first index, each in its own process, RSS from outside")
    parser.add_argument("--memory", type=int, nargs="+", default=[1000, 160, 96],
                        help="ledger.memory_mb values for --rss (1000: today's two parsers)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-poller-", dir="/tmp"))
    workdir.chmod(0o755)
    stack = MailStack(workdir / "stack", domains=["example.test"])
    stack.install()
    stack.add_user(ADDRESS, PASSWORD)
    stack.start()
    try:
        with stack.imap_client(ADDRESS, PASSWORD) as c:
            c.select_folder("INBOX")
        t0 = time.perf_counter()
        seed_maildir(stack, ADDRESS, messages(args.messages))
        print(f"seeded {args.messages} messages as maildir files in "
              f"{time.perf_counter() - t0:.1f} s")
        raw_fetch(stack.host, stack.imap_port)  # Dovecot builds its index once, untimed
        if args.rss:
            print(f"load average before: {os.getloadavg()}")
            for memory_mb in args.memory:
                rss_run(stack, workdir, memory_mb, args.messages)
            print(f"load average after: {os.getloadavg()}")
            return
        print(f"\n== first index, loopback ({args.messages} messages)")
        raw_s, raw_bytes = raw_fetch(stack.host, stack.imap_port)
        rss: list[tuple[int, float]] = [(0, rss_mib())]
        poll_s, counts, ledger = index(stack, workdir, "loopback", stack.imap_port, rss)
        raw_again, _b = raw_fetch(stack.host, stack.imap_port)
        raw_best = min(raw_s, raw_again)
        print(f"raw imapclient bulk BODY.PEEK[]: {raw_best:6.2f} s  "
              f"{args.messages / raw_best:8.0f} msg/s  ({raw_bytes / raw_best / 2**20:.1f} MiB/s)")
        print(f"poller first index:             {poll_s:6.2f} s  "
              f"{args.messages / poll_s:8.0f} msg/s  ratio {raw_best / poll_s:.2f}x of raw")
        print(f"  indexed: {counts.line()}")
        sent, t = unchanged(stack, ledger, stack.imap_port)
        print(f"unchanged poll: {sent} IMAP command(s), {t * 1000:.1f} ms")

        print("\nRSS while indexing (messages indexed -> MiB):")
        step = max(1, len(rss) // 10)
        print("  " + "  ".join(f"{n}:{m:.0f}" for n, m in rss[::step] + [rss[-1]]))

        lat = idle_latency(stack, ledger, args.latency_rounds)
        total = [t for _a, t in lat]
        print(f"\n== delivery to ledger via IDLE ({len(lat)} SMTP deliveries)")
        print(f"median {statistics.median(total) * 1000:.0f} ms, max {max(total) * 1000:.0f} ms"
              f"  (of which: server announces after median "
              f"{statistics.median(a for a, _t in lat) * 1000:.0f} ms; poller indexes in median "
              f"{statistics.median(t - a for a, t in lat) * 1000:.0f} ms)")
        ledger.close()

        print(f"\n== through a userspace delay proxy, {args.rtt * 1000:.0f} ms RTT")
        with DelayProxyProcess(stack.host, stack.imap_port, delay=args.rtt / 2) as proxy:
            raw_s, _b = raw_fetch(stack.host, proxy.port)
            poll_s, counts, ledger = index(stack, workdir, "wan", proxy.port)
            print(f"raw imapclient bulk BODY.PEEK[]: {raw_s:6.2f} s  "
                  f"{args.messages / raw_s:8.0f} msg/s")
            print(f"poller first index:             {poll_s:6.2f} s  "
                  f"{counts.new / poll_s:8.0f} msg/s  ratio {raw_s / poll_s:.2f}x of raw")
            sent, t = unchanged(stack, ledger, proxy.port)
            print(f"unchanged poll: {sent} IMAP command(s), {t * 1000:.1f} ms")
            ledger.close()
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
