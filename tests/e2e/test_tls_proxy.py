"""The TLS reverse proxies of deploy/, run in front of a real ``mailbridge serve``: the
leak test goes through them, and their own logs and temporary files are searched too;
HTTPS only, HSTS, no version in ``Server``, the limiter sees each client's network."""

from __future__ import annotations

import math
import re
import socket
import ssl
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from mailbridge.config import RelaySettings, Secret
from mailbridge.demo import fill_form
from mailbridge.relay.connections import MAX_EXTRA_BODY_SECONDS
from mailbridge.relay.media import MediaLimits
from tests.e2e.proxies import (
    CADDYFILE,
    NGINX_SITE,
    Certificate,
    Proxy,
    caddy,
    nginx,
    self_signed,
)
from tests.e2e.support import (
    MAILDIR_STATION,
    RelayProcess,
    free_port,
    maildir_files,
    relay_toml,
)
from tests.e2e.test_leaks import (
    MARKERS,
    SOURCE_IP,
    assert_no_trace,
    every_file,
    relay_wrote,
    submit_marked,
)
from tests.waiting import wait_for

ProxyFactory = Callable[[Path, int, Certificate], AbstractContextManager[Proxy]]
PROXIES: dict[str, ProxyFactory] = {"nginx": nginx, "caddy": caddy}
BODY_MARK = "BODYMARK-5e1d"


def start_relay(folder: Path, *, rate: int = 100000) -> tuple[RelayProcess, int]:
    """A relay that trusts the proxy on 127.0.0.1 for X-Forwarded-For, as deployed."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = folder / "mailbridge.toml"
    config.write_text(relay_toml(MAILDIR_STATION, port=port, rate=rate,
                                 extra='trusted_proxies = ["127.0.0.1"]\n'), encoding="utf-8")
    (folder / ".env").write_text("MAILBRIDGE_SECRET=e2e-secret-" + "k" * 32 + "\n",
                                 encoding="utf-8")
    return RelayProcess(config, port).start(), port


@pytest.fixture(params=sorted(PROXIES))
def proxy_factory(request: pytest.FixtureRequest) -> ProxyFactory:
    return PROXIES[request.param]


@pytest.fixture
def cert(tmp_path: Path) -> Certificate:
    return self_signed(tmp_path)


def client_errors(proxy: Proxy, tls: ssl.SSLContext) -> None:
    """What a proxy logs with its client's address: plain HTTP on the TLS port, a broken
    handshake, a body over the limit, a client gone mid-request."""
    for junk in (b"GET / HTTP/1.0\r\n\r\n", b"\x16\x03\x01\x00\x05hello"):
        with socket.create_connection(("127.0.0.1", proxy.https_port), timeout=10) as sock:
            sock.sendall(junk)
            sock.recv(1024)
    transport = httpx.HTTPTransport(local_address=SOURCE_IP, verify=tls)
    with httpx.Client(transport=transport, timeout=30) as client:
        big = client.post(proxy.https + "/s/ncs/cho", headers=MARKERS,
                          data={"text": BODY_MARK * 8000})
        assert big.status_code == 413
    # A declared body over the limit: nginx refuses it before reading any of it.
    with socket.create_connection(("127.0.0.1", proxy.https_port), timeout=10,
                                  source_address=(SOURCE_IP, 0)) as raw, \
            tls.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(b"POST /s/ncs/cho HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"User-Agent: " + MARKERS["User-Agent"].encode() + b"\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 209715200\r\n\r\ntext=" + BODY_MARK.encode())
        sock.settimeout(5)
        try:
            head = sock.recv(1024)
        except TimeoutError:  # Caddy streams the body on; the client leaves halfway
            head = b""
        assert head == b"" or head.startswith(b"HTTP/1.1 413 "), head


def test_tips_through_the_proxy_leave_no_trace_in_it_or_the_relay(
        tmp_path: Path, proxy_factory: ProxyFactory, cert: Certificate) -> None:
    relay, port = start_relay(tmp_path / "relay")
    tls = cert.client_context()
    try:
        with proxy_factory(tmp_path, port, cert) as proxy:
            receipts = submit_marked(proxy.https, verify=tls)
            wait_for(lambda: len(maildir_files(tmp_path / "relay" / "mail" / "ncs")) == 3,
                     "three delivered tips", 30)
            with httpx.Client(verify=tls, timeout=30) as client:
                page = client.get(proxy.https + "/s/ncs/cho", headers=MARKERS)
                assert page.headers["strict-transport-security"].startswith("max-age=")
                assert not any(c.isdigit() for c in page.headers.get("server", ""))
                plain = client.get(proxy.http + "/s/ncs/cho?lang=hmn")
                assert plain.status_code in (301, 308)
                assert plain.headers["location"].startswith("https://")
                assert "lang=hmn" in plain.headers["location"]
            client_errors(proxy, tls)
            relay.stop()  # the proxy's upstream is gone: an error line about a client
            with httpx.Client(transport=httpx.HTTPTransport(local_address=SOURCE_IP,
                                                            verify=tls), timeout=30) as c:
                assert c.get(proxy.https + "/s/ncs/cho", headers=MARKERS).status_code == 502
    finally:
        relay.stop()
    relay_wrote(tmp_path / "relay", receipts)
    proxy_files = every_file(proxy.prefix)
    assert proxy.main_log in proxy_files and proxy.main_log.stat().st_size > 0
    assert_no_trace(proxy_files, receipts)
    for path in proxy_files:
        assert BODY_MARK.encode() not in path.read_bytes(), f"a request body in {path}"


def test_the_limiter_counts_each_client_network_behind_the_proxy(
        tmp_path: Path, proxy_factory: ProxyFactory, cert: Certificate) -> None:
    """Two tips an hour per network: the third from one network is refused, a tip from
    another network still goes (without X-Forwarded-For all would share the proxy's)."""
    relay, port = start_relay(tmp_path / "relay", rate=2)
    tls = cert.client_context()

    def send(source: str) -> int:
        transport = httpx.HTTPTransport(local_address=source, verify=tls)
        with httpx.Client(transport=transport, timeout=30) as client:
            page = client.get(proxy.https + "/s/ncs/cho")
            target, fields = fill_form(page.text, proxy.https + "/s/ncs/cho", "Có người lạ.")
            return client.post(target, data=fields).status_code

    try:
        with proxy_factory(tmp_path, port, cert) as proxy:
            assert [send("127.0.0.77") for _ in range(3)] == [200, 200, 429]
            assert send("127.0.9.9") == 200
    finally:
        relay.stop()



def test_the_deploy_files_match_the_relays_limits() -> None:
    """Timeouts and the largest body as the relay's defaults: a proxy stricter than the
    relay refuses good tips, a looser one holds connections the relay has given up."""
    relay = RelaySettings(address="a@b.c", domain="b.c", database="", secret=Secret(""))
    header, body = int(relay.header_timeout_seconds), int(relay.body_timeout_seconds)
    largest = MediaLimits().max_upload_bytes  # photos and voice; the text adds < 1 MiB
    nginx_conf = NGINX_SITE.read_text(encoding="utf-8")
    assert f"client_header_timeout {header}s;" in nginx_conf
    assert f"client_body_timeout {body}s;" in nginx_conf
    [mib] = re.findall(r"client_max_body_size (\d+)m;", nginx_conf)
    assert largest < int(mib) * 2**20 <= largest + 2**20
    caddyfile = CADDYFILE.read_text(encoding="utf-8")
    assert f"read_header {header}s" in caddyfile
    # Caddy's read_body is for the whole body: the relay's longest deadline, in minutes.
    longest = math.ceil((body + MAX_EXTRA_BODY_SECONDS) / 60)
    assert f"read_body {longest}m" in caddyfile
    assert f"max_size {mib}MiB" in caddyfile
