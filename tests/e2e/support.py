"""Run the real ``mailbridge serve`` process and talk to it like a phone does."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from mailbridge.demo import fill_form

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-secret-" + "k" * 32
_CODE = re.compile(r"\b(\d{4})[ \u00a0-]?(\d{4})[ \u00a0-]?(\d{4})[ \u00a0-]?(\d{4})\b")
_REF = re.compile(r"\b([A-Z0-9]{1,12}-\d{4,})\b")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(folder: Path, port: int, stations: str) -> Path:
    """A relay config under *folder* (its database, logs and Maildirs stay there)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mailbridge.toml"
    path.write_text(f"""
[relay]
address = "tips@relay.example.test"
domain = "relay.example.test"
database = "sqlite:///relay.db"
secret_env = "MAILBRIDGE_SECRET"
listen_port = {port}
rate_limit_per_hour = 100000

[ledger]
database = "sqlite:///ledger.db"
{stations}
""", encoding="utf-8")
    (folder / ".env").write_text(f"MAILBRIDGE_SECRET={SECRET}\n", encoding="utf-8")
    return path


MAILDIR_STATION = """
[[stations]]
id = "ncs"
name = "Đồn Biên phòng Nậm Cha"
mailbox = "tips@ncs.example.test"
maildir = "mail/ncs"
placements = [{ id = "cho", label = "Chợ phiên" }]
"""


@dataclass
class Receipt:
    ref: str
    code: str


class RelayProcess:
    """``mailbridge serve`` as its own process, its output kept in files under the folder."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.base = f"http://127.0.0.1:{port}"
        self.stdout = config.parent / "serve.out"
        self.stderr = config.parent / "serve.err"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> RelayProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBRIDGE")}
        with self.stdout.open("ab") as out, self.stderr.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailbridge", "--config", str(self.config), "serve"],
                stdout=out, stderr=err, cwd=self.config.parent, env=env)
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


def maildir_files(folder: Path) -> list[Path]:
    return sorted(p for sub in ("new", "cur") if (folder / sub).is_dir()
                  for p in (folder / sub).iterdir())


def wait_for(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
