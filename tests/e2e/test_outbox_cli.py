"""An admin's view: a refused tip is dead-lettered, visible, retried and dropped by the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
from aiosmtpd.controller import Controller

from tests.e2e.support import ROOT, RelayProcess, free_port, submit, write_config
from tests.relay.test_outbox import Sink
from tests.waiting import wait_for

TEXT = "Xe tải xanh chở hàng lậu qua cửa khẩu phụ lúc nửa đêm."


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbridge", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
                          env={"COLUMNS": "200", "PATH": ""})


def _row(listing: str, ref: str) -> str:
    lines = [line for line in listing.splitlines() if ref in line]
    assert len(lines) == 1, listing
    return lines[0]


def _first_number(row: str) -> str:
    match = re.search(r"\d+", row)
    assert match is not None, row
    return match.group(0)


def test_dead_letter_list_retry_and_drop(tmp_path: Path) -> None:
    sink = Sink()
    sink.replies = ["550 5.1.1 mailbox unavailable", "550 5.1.1 mailbox unavailable"]
    smtp_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    port = free_port()
    config = write_config(tmp_path, port, f"""
[[stations]]
id = "ncs"
name = "Đồn Biên phòng Nậm Cha"
mailbox = "tips@ncs.example.test"
[stations.smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
""")
    relay = RelayProcess(config, port).start()
    try:
        with httpx.Client(timeout=30) as client:
            first = submit(client, relay.base, "/s/ncs", TEXT)
            second = submit(client, relay.base, "/s/ncs", TEXT)

        def both_dead() -> bool:
            out = _cli(config, "outbox", "list").stdout
            return all(r.ref in out and "dead" in _row(out, r.ref) for r in (first, second))

        wait_for(both_dead, "both tips dead-lettered", 30)
    finally:
        relay.stop()

    listing = _cli(config, "outbox", "list")
    assert listing.returncode == 0, listing.stderr
    row = _row(listing.stdout, first.ref)
    assert "550 5.1.1 mailbox unavailable" in row
    assert TEXT[:20] not in listing.stdout  # the tip text is never shown
    ids = {r.ref: _first_number(_row(listing.stdout, r.ref)) for r in (first, second)}

    retried = _cli(config, "outbox", "retry", ids[first.ref])
    assert retried.returncode == 0 and "queued" in retried.stdout, retried.stderr
    dropped = _cli(config, "outbox", "drop", ids[second.ref])
    assert dropped.returncode == 0 and "dropped" in dropped.stdout, dropped.stderr
    unknown = _cli(config, "outbox", "retry", "999")
    assert unknown.returncode == 3 and "999" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    relay = RelayProcess(config, port).start()  # the server accepts now: the retry goes out
    try:
        wait_for(lambda: len(sink.received) == 1, "the retried tip delivered", 30)
    finally:
        relay.stop()
        controller.stop()
    everything = _cli(config, "outbox", "list", "--all").stdout
    assert "delivered" in _row(everything, first.ref)
    assert "dropped" in _row(everything, second.ref)
    assert first.ref.encode() in sink.received[0][2]
    assert _cli(config, "outbox", "list").stdout.count("NCS-") == 0
