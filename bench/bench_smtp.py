"""SMTP intake figures: officers' replies per second, and reply to readable at /status.

Runs the real ``mailbridge serve`` process (Maildir station, SQLite). Tips go in by
the form; each reply is a Thunderbird-style answer (the tip quoted, a signature)
sent with aiosmtplib to its Reply-To. Prints numbers; asserts nothing.

    python -m bench.bench_smtp [--tips 20] [--clients 4] [--seconds 10] [--latency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import email
import statistics
import tempfile
import time
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import aiosmtplib
import httpx

from tests.e2e.support import (
    MAILDIR_STATION,
    Receipt,
    RelayProcess,
    free_port,
    maildir_files,
    submit,
    write_config,
)

OFFICER = "tips@ncs.example.test"


def answer(tip: EmailMessage, n: int) -> EmailMessage:
    body = tip.get_body(("plain",))
    quoted = "\n".join(f"> {line}" for line in (body.get_content() if body else "").splitlines())
    msg = EmailMessage()
    msg["From"] = f"Trực ban <{OFFICER}>"
    msg["To"] = str(tip["Reply-To"])
    msg["Subject"] = "Re: " + str(tip["Subject"])
    msg["In-Reply-To"] = str(tip["Message-ID"])
    msg.set_content(f"Đồn đã nhận tin, cảm ơn bà con (trả lời {n}).\n\n"
                    f"Vào 01/12/2026 09:15, mailbridge đã viết:\n{quoted}\n\n-- \n"
                    "Thiếu tá Nguyễn Văn An\nĐồn Biên phòng Nậm Cha\n")
    return msg


async def throughput(port: int, tips: list[EmailMessage], clients: int, seconds: float) -> None:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(k: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        try:
            n = k
            while time.perf_counter() < deadline:
                msg = answer(tips[n % len(tips)], n)
                start = time.perf_counter()
                await smtp.send_message(msg, sender=OFFICER)
                latencies.append(time.perf_counter() - start)
                n += clients
        finally:
            await smtp.quit()

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    print(f"SMTP intake, {clients} connections, closed loop: {len(latencies)} replies in "
          f"{wall:.1f} s = {len(latencies) / wall:.0f} replies/s; per reply p50 "
          f"{q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms")


async def readable(base: str, port: int, pairs: list[tuple[Receipt, EmailMessage]]) -> None:
    """Time from the reply's first SMTP byte to its text on the tipster's status page."""
    times: list[float] = []
    async with httpx.AsyncClient(timeout=30) as web:
        for n, (receipt, tip) in enumerate(pairs):
            msg = answer(tip, 10_000 + n)
            start = time.perf_counter()
            await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, sender=OFFICER,
                                  start_tls=False)
            page = await web.post(base + "/status", data={"code": receipt.code})
            if f"trả lời {10_000 + n}" not in page.text:
                raise RuntimeError(f"the reply is not on the status page (HTTP {page.status_code})")
            times.append(time.perf_counter() - start)
    print(f"reply sent -> readable at /status (one at a time, {len(times)}): median "
          f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tips", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--latency", type=int, default=8, help="replies timed to /status")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp:
        port, smtp_port = free_port(), free_port()
        config = write_config(Path(tmp), port, MAILDIR_STATION,
                              extra=f'smtp_listen = "127.0.0.1:{smtp_port}"\n'
                                    "status_lookups_per_hour = 100000\n"
                                    "status_lookups_total_per_hour = 100000\n")
        relay = RelayProcess(config, port).start()
        try:
            with httpx.Client(timeout=30) as web:
                receipts = [submit(web, relay.base, "/s/ncs/cho", f"Tin thử số {n}: hàng lậu.")
                            for n in range(args.tips)]
            mail = Path(tmp) / "mail" / "ncs"
            deadline = time.monotonic() + 60
            while len(maildir_files(mail)) < args.tips and time.monotonic() < deadline:
                time.sleep(0.1)
            by_ref = {}
            for path in maildir_files(mail):
                tip = email.message_from_bytes(path.read_bytes(), policy=default_policy)
                assert isinstance(tip, EmailMessage)
                by_ref[str(tip["X-Mailbridge-Ref"])] = tip
            pairs = [(r, by_ref[r.ref]) for r in receipts]
            asyncio.run(throughput(smtp_port, [t for _, t in pairs], args.clients, args.seconds))
            asyncio.run(readable(relay.base, smtp_port, pairs[: args.latency]))
        finally:
            relay.stop()


if __name__ == "__main__":
    main()
