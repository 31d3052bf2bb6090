"""``mailbridge serve`` under abuse: idle floods, slow clients, a busy port.

The relay runs as its own process with RLIMIT_NOFILE at 256 (systemd's default is
1024; 256 makes a flood cheap to test), so its connection cap becomes 64. Its
stderr is the journal: it must stay a few lines long and name no client.
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailbridge.relay.connections import RESERVED_FDS
from tests.e2e.support import MAILDIR_STATION, RelayProcess, free_port, write_config
from tests.waiting import wait_for

OPEN_FILES = 256
CAP = OPEN_FILES - RESERVED_FDS
IDLE = 400  # far more than the cap, and than the open-file limit itself
DEADLINES = "header_timeout_seconds = 2\nbody_timeout_seconds = 2\n"
HEAD = (b"POST /s/ncs HTTP/1.1\r\nHost: relay\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n")


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    port = free_port()
    config = write_config(tmp_path, port, MAILDIR_STATION, extra=DEADLINES)
    process = RelayProcess(config, port, open_files=OPEN_FILES).start()
    try:
        yield process
    finally:
        process.stop()


def address(relay: RelayProcess) -> tuple[str, int]:
    host, port = relay.base.removeprefix("http://").split(":")
    return host, int(port)


def closed_by_server(sock: socket.socket) -> bool:
    """True once the relay hung up on *sock* (EOF or reset); never blocks."""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def trickle(relay: RelayProcess, data: bytes, *, first: bytes = b"") -> int:
    """Send *first* at once, then *data* a byte at a time, each once the relay has had a
    quarter second to hang up; how many bytes of *data* went out before it did."""
    with socket.create_connection(address(relay), timeout=10) as sock:
        sock.sendall(first)
        for sent in range(len(data)):
            readable, _, _ = select.select([sock], [], [], 0.25)
            if readable and closed_by_server(sock):
                return sent
            sock.send(data[sent:sent + 1])
        wait_for(lambda: closed_by_server(sock), "the relay to hang up", 10)
    return len(data)


def journal(relay: RelayProcess) -> list[str]:
    assert relay.stop() == 0
    lines = relay.stderr.read_text(errors="replace").splitlines()
    port = relay.base.rsplit(":", 1)[1]
    client_lines = [line for line in lines
                    if "127.0.0.1" in line and f"listening on 127.0.0.1:{port}" not in line]
    assert client_lines == []  # no client address, ever
    assert not any("Traceback" in line or line.startswith("ERROR") for line in lines), lines
    return lines


def test_a_flood_of_idle_connections_does_not_starve_the_relay(relay: RelayProcess) -> None:
    idle = [socket.create_connection(address(relay), timeout=10) for _ in range(IDLE)]
    try:
        # At most CAP of them are held; a new client pushes out the oldest idle one.
        assert httpx.get(relay.base + "/healthz", timeout=10).text == "ok"
        wait_for(lambda: all(closed_by_server(s) for s in idle),
                 "the relay to drop every idle connection", 30)
        assert httpx.get(relay.base + "/healthz", timeout=10).text == "ok"
    finally:
        for sock in idle:
            sock.close()
    lines = journal(relay)
    assert len(lines) < 15, lines  # was ~100,000 tracebacks (46 MB) in 20 s
    assert [line for line in lines if "lowered" in line] == [
        f"WARNING mailbridge.relay.connections: relay.max_connections lowered from 1000 to "
        f"{CAP} to fit the open-file limit of {OPEN_FILES}: raise LimitNOFILE to at least "
        f"{1000 + RESERVED_FDS}"]
    assert sum("connection cap of" in line for line in lines) == 1  # once a minute at most
    assert sum("request head took longer than 2 s" in line for line in lines) <= 1


def test_a_slow_request_head_is_dropped_by_its_deadline(relay: RelayProcess) -> None:
    head = HEAD + b"Content-Length: 5\r\n\r\n"
    assert trickle(relay, head) < len(head)
    assert httpx.get(relay.base + "/healthz", timeout=10).text == "ok"
    lines = journal(relay)
    assert ("INFO mailbridge.relay.connections: dropped a connection whose request head took "
            "longer than 2 s") in lines


def test_a_trickling_body_is_dropped_by_its_deadline(relay: RelayProcess) -> None:
    body = b"t=x&lang=vi&category=drugs&text=" + b"a" * 200
    head = HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode()
    assert 0 < trickle(relay, body, first=head) < len(body)
    lines = journal(relay)
    assert ("INFO mailbridge.relay.connections: dropped a connection whose request body took "
            "longer than 2 s") in lines
    assert "INFO mailbridge.relay.web: a client went away before its form arrived" in lines
    assert not (relay.config.parent / "mail" / "ncs" / "new").exists()  # nothing sent


def test_a_busy_port_is_a_runtime_failure_systemd_retries(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        config = write_config(tmp_path, port, MAILDIR_STATION)
        done = subprocess.run([sys.executable, "-m", "mailbridge", "--config", str(config),
                               "serve"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60, check=False)
    assert done.returncode == 3, done.stderr  # 2 would stop systemd from restarting
    assert [line for line in done.stderr.splitlines() if line.startswith("mailbridge")] == [
        f"mailbridge: cannot listen on 127.0.0.1:{port} (relay.listen_host, "
        f"relay.listen_port): the port is in use; stop the process that holds it, or choose "
        f"another relay.listen_port"]
