"""The relay process: web form and delivery worker in one loop, quiet about clients."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from mailbridge.config import load_config
from mailbridge.relay.server import OncePerInterval, TracebackWithoutText, _bind, run_relay
from tests.e2e.support import relay_toml
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
SECRET = "server-test-secret-" + "q" * 32



def write_config(folder: Path, port: int = 8080) -> Path:
    path = folder / "mailbridge.toml"
    path.write_text(relay_toml(secret_env="MB_SECRET", port=port), encoding="utf-8")
    return path


def send_tip(base: str, text: str) -> str:
    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/s/ncs/cho")
        token = re.search(r'name=t value="([^"]+)"', page.text)
        assert token is not None
        reply = client.post("/s/ncs/cho", data={"t": token.group(1), "lang": "vi",
                                                 "category": "border", "text": text})
    assert reply.status_code == 200, reply.text
    assert "server" not in reply.headers and "date" not in reply.headers
    ref = re.search(r"\bNCS-\d{4}\b", reply.text)
    assert ref is not None
    return ref.group(0)


def test_run_relay_serves_delivers_and_stops(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    settings = load_config(write_config(tmp_path), env={"MB_SECRET": SECRET})
    settings = dataclasses.replace(settings, relay=dataclasses.replace(settings.relay,
                                                                       listen_port=0))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ports: list[int] = []
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(run_relay(settings, ready=ports.append,
                                                         stop=stop)), daemon=True)
    thread.start()
    wait_for(lambda: ports or not thread.is_alive(), "the relay to listen")
    assert ports, "run_relay ended before it listened"
    ref = send_tip(f"http://127.0.0.1:{ports[0]}", "Có người vượt biên đêm qua")
    new = tmp_path / "mail" / "ncs" / "new"
    wait_for(lambda: new.is_dir() and any(new.iterdir()), "delivery into the Maildir")
    (delivered,) = new.iterdir()
    assert f"X-Mailbridge-Ref: {ref}" in delivered.read_text(encoding="utf-8")
    loop.call_soon_threadsafe(stop.set)
    thread.join(20)
    assert not thread.is_alive()
    loop.close()
    lines = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]
    assert f"accepted tip {ref} for station ncs" in lines  # DEBUG only
    assert "relay stopped" in lines
    assert not any("127.0.0.1:" in line and "listening" not in line for line in lines)
    assert not any("vượt biên" in line for line in lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBRIDGE")}
    env.update(MB_SECRET=SECRET, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "mailbridge", "--config", str(config),
                             "serve"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        def healthy() -> bool:
            assert proc.poll() is None, proc.communicate()[1].decode(errors="replace")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).text == "ok"
            except httpx.TransportError:
                return False

        wait_for(healthy, "serve to answer")
        ref = send_tip(f"http://127.0.0.1:{port}", "Thấy hàng lậu ở bến sông")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = err.decode("utf-8", errors="replace")
    assert proc.returncode == 0, log
    # No ref at the default level: the journal's timestamp would pin the minute.
    assert ref not in log and "relay stopped" in log
    assert "127.0.0.1:" not in log.replace(f"listening on 127.0.0.1:{port}", "")
    assert "hàng lậu" not in log and "alembic" not in log


def test_logged_tracebacks_withhold_the_exception_text() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(TracebackWithoutText())
    logger = logging.getLogger("tests.relay.traceback")
    logger.addHandler(handler)
    logger.propagate = False
    tip = "Có người lạ ở bến sông"
    try:
        try:
            raise UnicodeError(tip)
        except UnicodeError:
            logger.exception("Exception in ASGI application")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "Exception in ASGI application" in out and "builtins.UnicodeError" in out
    assert "test_web_server.py" in out  # the frames stay, for the bug report
    assert "bến sông" not in out


def test_accepted_connections_have_nagle_off() -> None:
    """Without TCP_NODELAY every keep-alive response waited ~40 ms for a delayed ACK."""
    async def probe() -> int:
        seen: asyncio.Queue[int] = asyncio.Queue()

        def on_connect(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.put_nowait(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=_bind("127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        value = await asyncio.wait_for(seen.get(), 10)
        writer.close()
        server.close()
        await server.wait_closed()
        return value

    assert asyncio.run(probe()) != 0


def test_client_triggered_lines_are_shown_once_a_minute_with_a_count() -> None:
    now = [1000.0]
    once = OncePerInterval(interval=60.0, clock=lambda: now[0])

    def shown(name: str, msg: str, *args: object) -> str | None:
        record = logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)
        return record.getMessage() if once.filter(record) else None

    cap = "connection cap of %d reached"
    assert shown("mailbridge.relay.connections", cap, 64) == "connection cap of 64 reached"
    assert [shown("mailbridge.relay.connections", cap, 64) for _ in range(3)] == [None] * 3
    assert shown("uvicorn.error", "Invalid HTTP request received.") is not None  # another kind
    assert shown("mailbridge.relay.outbox", "outbox: %s", "deferred") == "outbox: deferred"
    assert shown("mailbridge.relay.outbox", "outbox: %s", "deferred") == "outbox: deferred"
    now[0] += 59.9
    assert shown("mailbridge.relay.connections", cap, 64) is None
    now[0] += 0.1
    assert shown("mailbridge.relay.connections", cap, 64) == (
        "connection cap of 64 reached [and 4 more like it since the last one]")
    assert shown("mailbridge.relay.connections", cap, 64) is None
