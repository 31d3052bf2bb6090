"""Anonymity, tested: request details of a tipster appear in nothing the relay writes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.support import (
    MAILDIR_STATION,
    RelayProcess,
    free_port,
    maildir_files,
    submit,
    write_config,
)
from tests.waiting import wait_for

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


def _every_file(folder: Path) -> list[Path]:
    """Every file the relay wrote (the config and .env are the test's own input)."""
    return [p for p in folder.rglob("*")
            if p.is_file() and p.name not in ("mailbridge.toml", ".env")]


@pytest.mark.parametrize(("lang_param", "extra"), [
    ("", ""),
    ("?lang=hmn", ""),
    # Behind a trusted proxy the limiter reads X-Forwarded-For: still nothing is written.
    ("", f'trusted_proxies = ["{SOURCE_IP}"]\n'),
])
def test_no_request_detail_reaches_logs_database_or_mail(tmp_path: Path, lang_param: str,
                                                         extra: str) -> None:
    port = free_port()
    config = write_config(tmp_path, port, MAILDIR_STATION, extra=extra)
    relay = RelayProcess(config, port).start()
    transport = httpx.HTTPTransport(local_address=SOURCE_IP)
    try:
        with httpx.Client(transport=transport, timeout=30) as client:
            receipts = [submit(client, relay.base, f"/s/ncs/cho{lang_param}",
                               f"Tin báo số {i}: có người lạ ở bản.", headers=MARKERS)
                        for i in range(3)]
        mail = tmp_path / "mail" / "ncs"
        wait_for(lambda: len(maildir_files(mail)) == 3, "three delivered tips", 30)
    finally:
        relay.stop()

    files = _every_file(tmp_path)
    written = {p.name for p in files}
    assert {"relay.db", "serve.out", "serve.err"} <= written
    assert len(maildir_files(tmp_path / "mail" / "ncs")) == 3
    for path in files:
        data = path.read_bytes()
        for needle in NEEDLES:
            assert needle.encode() not in data, f"{needle!r} found in {path}"
            assert needle.encode("utf-16-le") not in data, f"{needle!r} (utf-16) in {path}"
    # The receipt code is never stored in clear either: only its slow hash.
    for path in files:
        data = path.read_bytes()
        for receipt in receipts:
            assert receipt.code.encode() not in data, f"receipt code found in {path}"
