"""Run the real ``mailbridge serve`` process and talk to it like a phone does."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from mailbridge.config import Settings
from mailbridge.demo import fill_form
from mailbridge.relay.server import run_relay
from tests.servers.mailstack import MailStack

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-secret-" + "k" * 32
_CODE = re.compile(r"\b(\d{4})[ \u00a0-]?(\d{4})[ \u00a0-]?(\d{4})[ \u00a0-]?(\d{4})\b")
_REF = re.compile(r"\b([A-Z0-9]{1,12}-\d{4,})\b")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


MAILDIR_STATION = """
[[stations]]
id = "ncs"
name = "Đồn Biên phòng Nậm Cha"
mailbox = "tips@ncs.example.test"
maildir = "mail/ncs"
placements = [{ id = "cho", label = "Chợ phiên" }]
"""
HOTLINE_STATION = MAILDIR_STATION.replace('maildir = "mail/ncs"',
                                          'maildir = "mail/ncs"\nhotline = "0213 3888 999"')


def relay_toml(stations: str = MAILDIR_STATION, *, secret_env: str = "MAILBRIDGE_SECRET",
               port: int | None = None, rate: int = 100000, extra: str = "",
               workers: int | None = 1) -> str:
    """The relay configuration every relay test starts from; *extra* adds [relay] keys.
    One web worker unless *workers* says otherwise (None: the default, one per CPU)."""
    listen = f"listen_port = {port}\n" if port is not None else ""
    listen += f"workers = {workers}\n" if workers is not None else ""
    return f"""
[relay]
address = "tips@relay.example.test"
domain = "relay.example.test"
database = "sqlite:///relay.db"
secret_env = "{secret_env}"
rate_limit_per_hour = {rate}
{listen}{extra}
[ledger]
database = "sqlite:///ledger.db"
{stations}"""


def write_config(folder: Path, port: int, stations: str, *, extra: str = "",
                 workers: int | None = 1) -> Path:
    """A relay config under *folder* (its database, logs and Maildirs stay there)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mailbridge.toml"
    path.write_text(relay_toml(stations, port=port, extra=extra, workers=workers),
                    encoding="utf-8")
    (folder / ".env").write_text(f"MAILBRIDGE_SECRET={SECRET}\n", encoding="utf-8")
    return path


def smtp_station(stack: MailStack, prefix: str = "NCS") -> str:
    """A station that delivers through the test mail stack's Postfix (STARTTLS + AUTH);
    its config's .env must set STATION_SMTP_PASSWORD=secret."""
    return f"""
[[stations]]
id = "ncs"
name = "Đồn Biên phòng Nậm Cha"
ref_prefix = "{prefix}"
mailbox = "station1@example.test"
placements = [{{ id = "cho", label = "Chợ phiên" }}]
[stations.smtp]
host = "127.0.0.1"
port = {stack.smtp_port}
tls = "starttls"
username = "station1@example.test"
password_env = "STATION_SMTP_PASSWORD"
ca_file = "{stack.ca_file}"
"""


def station_example_on(stack: MailStack, text: str, *, ca_file: Path | str,
                       more: tuple[tuple[str, str], ...] = ()) -> str:
    """config/station.example.toml's *text* pointed at the test stack's Dovecot (as
    station1, INBOX only, trusting *ca_file*), with *more* replacements; each one's old
    text must be there, so a change to the example shows here."""
    for old, new in (
            ('host = "imap.example.org"',
             f'host = "127.0.0.1"\nport = {stack.imaps_port}\nca_file = "{ca_file}"'),
            ('username = "tinbao.ncs@example.org"', 'username = "station1@example.test"'),
            ('folders = ["INBOX", "Sent"]', 'folders = ["INBOX"]'), *more):
        assert old in text, old
        text = text.replace(old, new)
    return text


def smtp_relay(folder: Path, stack: MailStack, prefix: str) -> RelayProcess:
    """``mailbridge serve`` delivering to station1 through the test stack's Postfix,
    started; refs start with *prefix*, so tests sharing the mailbox never mix."""
    port = free_port()
    config = write_config(folder, port, smtp_station(stack, prefix))
    with (folder / ".env").open("a") as env:
        env.write("STATION_SMTP_PASSWORD=secret\n")
    return RelayProcess(config, port).start()


@contextmanager
def relay_in_thread(settings: Settings) -> Iterator[str]:
    """The whole relay (form + delivery worker) in a thread on a free port; yields its URL."""
    settings = dataclasses.replace(settings,
                                   relay=dataclasses.replace(settings.relay, listen_port=0))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ports: list[int] = []
    thread = threading.Thread(target=lambda: loop.run_until_complete(
        run_relay(settings, ready=ports.append, stop=stop)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not ports:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the relay did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{ports[0]}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        loop.close()


@dataclass
class Receipt:
    ref: str
    code: str


class RelayProcess:
    """``mailbridge serve`` as its own process, its output kept in files under the folder."""

    def __init__(self, config: Path, port: int, *, open_files: int | None = None,
                 command: list[str] | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.config = config
        self.base = f"http://127.0.0.1:{port}"
        self.open_files = open_files  # RLIMIT_NOFILE of the process, as systemd's LimitNOFILE
        self.stdout = config.parent / "serve.out"
        self.stderr = config.parent / "serve.err"
        self.proc: subprocess.Popen[bytes] | None = None
        # By default `mailbridge --config FILE serve` in the config's folder; a unit's
        # ExecStart, environment and working directory instead (tests/e2e/service.py).
        self.command = command or [sys.executable, "-m", "mailbridge", "--config",
                                   str(config), "serve"]
        self.env = env
        self.cwd = cwd or config.parent

    def start(self, timeout: float = 30) -> RelayProcess:
        env = self.env if self.env is not None else {
            k: v for k, v in os.environ.items() if not k.startswith("MAILBRIDGE")}
        with self.stdout.open("ab") as out, self.stderr.open("ab") as err:
            self.proc = subprocess.Popen(
                self.command, stdout=out, stderr=err, cwd=self.cwd, env=env,
                preexec_fn=None if self.open_files is None else self._limit_open_files)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: "
                                     f"{self.stderr.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve did not become ready: {self.stderr.read_text()[-3000:]}")

    def _limit_open_files(self) -> None:
        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def logs(self) -> str:
        return (self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace"))


def submit(client: httpx.Client, base: str, path: str, text: str,
           headers: dict[str, str] | None = None) -> Receipt:
    """GET the form, fill it as a browser would, POST it; return what the receipt page shows."""
    page = client.get(base + path, headers=headers)
    assert page.status_code == 200, page.text[:500]
    target, fields = fill_form(page.text, base + path, text)
    reply = client.post(target, data=fields, headers=headers)
    assert reply.status_code == 200, reply.text[:500]
    code = _CODE.search(reply.text)
    ref = _REF.search(reply.text)
    assert code is not None and ref is not None, reply.text[:2000]
    return Receipt(ref.group(1), "".join(code.groups()))


@dataclass
class Answer:
    """What a phone got back for one tip, a refusal included."""

    status: int
    ref: str  # the ref on a receipt, else ""
    retry_after: str
    page: str


def send_tip(base: str, path: str, text: str) -> Answer:
    """One tip sent as a phone does (GET the form, POST it), whatever the answer."""
    with httpx.Client(timeout=60) as client:
        page = client.get(base + path)
        target, fields = fill_form(page.text, base + path, text)
        reply = client.post(target, data=fields)
    found = _REF.search(reply.text) if reply.status_code == 200 else None
    return Answer(reply.status_code, found.group(1) if found else "",
                  reply.headers.get("retry-after", ""), reply.text)


def maildir_files(folder: Path) -> list[Path]:
    return sorted(p for sub in ("new", "cur") if (folder / sub).is_dir()
                  for p in (folder / sub).iterdir())
