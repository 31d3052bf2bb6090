"""Anonymity, tested: request details of a tipster appear in nothing the relay writes."""

from __future__ import annotations

import re
import ssl
import stat
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest

from tests.e2e.service import RELAY_UNIT, unit_start
from tests.e2e.support import (
    MAILDIR_STATION,
    SECRET,
    Receipt,
    RelayProcess,
    free_port,
    maildir_files,
    relay_toml,
    submit,
    write_config,
)
from tests.waiting import wait_for

JOURNAL_LINE = re.compile(r"<[2-7]>(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S")
SOURCE_IP = "127.0.0.77"  # a loopback address of its own, so it is a recognisable marker
MARKERS = {
    "X-Forwarded-For": "192.0.2.123, 198.51.100.45",
    "X-Real-IP": "203.0.113.9",
    "Forwarded": "for=192.0.2.200;proto=https",
    "User-Agent": "Mozilla/5.0 (Linux; Android 9; UAMARK-9c1f) Zalo/22.06",
    "Cookie": "zsid=COOKIEMARK-77ab; lang=hmn",
    "Accept-Language": "hmn-x-langmark77,vi;q=0.9",
    "Referer": "https://zalo.me/REFMARK-31",
    "Via": "1.1 VIAMARK-proxy",
}
NEEDLES = [SOURCE_IP, "192.0.2.123", "198.51.100.45", "203.0.113.9", "192.0.2.200",
           "UAMARK-9c1f", "Android 9", "COOKIEMARK-77ab", "langmark77", "REFMARK-31",
           "VIAMARK"]


def every_file(folder: Path) -> list[Path]:
    """Every file under ``folder`` but the test's own input (the config and .env)."""
    return [p for p in folder.rglob("*")
            if p.is_file() and p.name not in ("mailbridge.toml", ".env")]


def submit_marked(base: str, count: int = 3, *, lang_param: str = "",
                  verify: ssl.SSLContext | bool = True) -> list[Receipt]:
    """``count`` tips from ``SOURCE_IP`` with a marker in every identifying header."""
    transport = httpx.HTTPTransport(local_address=SOURCE_IP, verify=verify)
    with httpx.Client(transport=transport, timeout=30) as client:
        return [submit(client, base, f"/s/ncs/cho{lang_param}",
                       f"Tin báo số {i}: có người lạ ở bản.", headers=MARKERS)
                for i in range(count)]


def assert_no_trace(files: Iterable[Path], receipts: Iterable[Receipt]) -> None:
    """No marker, and no receipt code in clear (only its slow hash is kept), in any file."""
    codes = [receipt.code for receipt in receipts]
    for path in files:
        data = path.read_bytes()
        for needle in NEEDLES:
            assert needle.encode() not in data, f"{needle!r} found in {path}"
            assert needle.encode("utf-16-le") not in data, f"{needle!r} (utf-16) in {path}"
        for code in codes:
            assert code.encode() not in data, f"receipt code found in {path}"


def relay_wrote(folder: Path, receipts: list[Receipt]) -> None:
    """The three tips reached the Maildir, and nothing the relay wrote holds a trace."""
    files = every_file(folder)
    assert {"relay.db", "serve.out", "serve.err"} <= {p.name for p in files}
    assert len(maildir_files(folder / "mail" / "ncs")) == 3
    assert_no_trace(files, receipts)


@pytest.mark.parametrize(("lang_param", "extra", "workers"), [
    ("", "", 1),
    ("?lang=hmn", "", 1),
    # Behind a trusted proxy the limiter reads X-Forwarded-For: still nothing is written.
    ("", f'trusted_proxies = ["{SOURCE_IP}"]\n', 1),
    # Two web workers, delivery in their parent: every process writes to the same files.
    ("", "", 2),
])
def test_no_request_detail_reaches_logs_database_or_mail(tmp_path: Path, lang_param: str,
                                                         extra: str, workers: int) -> None:
    port = free_port()
    config = write_config(tmp_path, port, MAILDIR_STATION, extra=extra, workers=workers)
    relay = RelayProcess(config, port).start()
    try:
        receipts = submit_marked(relay.base, lang_param=lang_param)
        mail = tmp_path / "mail" / "ncs"
        wait_for(lambda: len(maildir_files(mail)) == 3, "three delivered tips", 30)
    finally:
        relay.stop()
    relay_wrote(tmp_path, receipts)


def test_a_relay_started_as_its_unit_starts_it_writes_no_trace_either(tmp_path: Path) -> None:
    """The unit's own ExecStartPre and ExecStart, environment file, working directory and
    umask: the config in one folder (read-only for the service), the state in another."""
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    state.mkdir()
    port = free_port()
    config = etc / "relay.toml"
    stations = MAILDIR_STATION.replace('maildir = "mail/ncs"', f'maildir = "{state}/mail/ncs"')
    # workers=None: the unit's default, one web worker per CPU (at most 4).
    config.write_text(relay_toml(stations, port=port, workers=None).replace(
        'database = "sqlite:///relay.db"', f'database = "sqlite:///{state}/relay.db"'),
        encoding="utf-8")
    (etc / "relay.env").write_text(f"MAILBRIDGE_SECRET={SECRET}\n", encoding="utf-8")
    start = unit_start(RELAY_UNIT, {"/etc/mailbridge/relay.toml": config,
                                    "/etc/mailbridge/relay.env": etc / "relay.env",
                                    "/var/lib/mailbridge-relay": state})
    start.run_pre()
    etc.chmod(0o555)  # ProtectSystem=strict: the relay writes nothing beside its config
    relay = start.relay(config, port)
    try:
        relay.start()
        receipts = submit_marked(relay.base)
        wait_for(lambda: len(maildir_files(state / "mail" / "ncs")) == 3,
                 "three delivered tips", 30)
    finally:
        relay.stop()
        etc.chmod(0o755)
    files = every_file(tmp_path)
    assert {"relay.db", "serve.out", "serve.err"} <= {p.name for p in files}
    assert_no_trace(files, receipts)
    for path in (state / "relay.db", *maildir_files(state / "mail" / "ncs")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path  # UMask=0077 and fsmodes
    # For the journal: one line per event, each led by its syslog priority.
    lines = (etc / "serve.err").read_text(encoding="utf-8").splitlines()
    assert lines and all(JOURNAL_LINE.match(line) for line in lines), lines
