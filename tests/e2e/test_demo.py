"""`mailbridge demo`: the main job on the embedded default, as `make demo` runs it, and
its stopping."""

from __future__ import annotations

import contextlib
import email
import os
import signal
import smtplib
import subprocess
import sys
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from mailbridge.config import load_config
from mailbridge.demo import DEMO_RATE, run_demo, submit_sample, write_demo_config
from mailbridge.errors import ConfigError, RuntimeFailure
from mailbridge.station.ledger.models import Tip
from tests.e2e.support import (
    MAILDIR_STATION,
    ROOT,
    SECRET,
    free_port,
    maildir_files,
    relay_in_thread,
    relay_toml,
)
from tests.waiting import wait_for


def demo(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailbridge", "demo", "--dir", str(folder), "--port",
         str(free_port()), "--smtp-port", str(free_port()), *args], capture_output=True,
        text=True, cwd=ROOT, timeout=300, check=False)


def tips_in(folder: Path) -> int:
    engine = create_engine(f"sqlite:///{folder / 'ledger.db'}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Tip)).scalar_one())
    finally:
        engine.dispose()


def children(pid: int) -> dict[int, str]:
    """Live child processes of *pid*: pid -> command line (from /proc)."""
    found: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
            if int(ppid) == pid and state != "Z":
                found[int(stat.parent.name)] = (
                    (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_demo_sends_indexes_and_prints_the_urls(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    port, smtp_port = free_port(), free_port()
    result = subprocess.run(
        [sys.executable, "-m", "mailbridge", "demo", "--dir", str(folder), "--port", str(port),
         "--smtp-port", str(smtp_port), "--once"], capture_output=True, text=True, cwd=ROOT,
        timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"http://127.0.0.1:{port}/s/ncs/cho" in result.stdout
    assert f"replies by SMTP   127.0.0.1:{smtp_port}" in result.stdout
    assert f"http://127.0.0.1:{port}/status" in result.stdout
    assert len(maildir_files(folder / "mail" / "ncs")) == 2
    assert len(maildir_files(folder / "mail" / "pvs")) == 1
    # Nậm Cha's spoken Vietnamese instructions, made by espeak-ng on this machine.
    assert [p.name for p in (folder / "prompts" / "ncs").iterdir()] == ["vi.m4a"]
    engine = create_engine(f"sqlite:///{folder / 'ledger.db'}")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Tip)).scalar_one() == 3
        categories = set(conn.execute(select(Tip.category)).scalars())
        assert categories == {"smuggling", "drugs", "residence"}
    engine.dispose()
    # A second run reuses the config and adds three more tips.
    again = subprocess.run(
        [sys.executable, "-m", "mailbridge", "demo", "--dir", str(folder), "--port", str(port),
         "--smtp-port", str(smtp_port), "--once"], capture_output=True, text=True, cwd=ROOT,
        timeout=180, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(maildir_files(folder / "mail" / "ncs")) == 4
    assert "the relay stops now" in again.stdout


def test_once_seeds_more_tips_than_the_default_rate_limit(tmp_path: Path) -> None:
    """40 tips from this machine: more than the relay's default 30 per network and hour."""
    result = demo(tmp_path / "demo", "--once", "--seed", "40")
    assert result.returncode == 0, result.stdout + result.stderr
    assert tips_in(tmp_path / "demo") == 40
    # Every subject in the ledger reads as the relay wrote it, spaces and all (the
    # email package's folding used to merge "lạ mang" into "lạmang" in 15 of 75).
    written = sorted(str(email.message_from_bytes(f.read_bytes(), policy=default_policy)
                         ["Subject"]) for f in maildir_files(tmp_path / "demo" / "mail" / "ncs")
                     + maildir_files(tmp_path / "demo" / "mail" / "pvs"))
    engine = create_engine(f"sqlite:///{tmp_path / 'demo' / 'ledger.db'}")
    try:
        with engine.connect() as conn:
            indexed = sorted(conn.execute(select(Tip.subject)).scalars())
    finally:
        engine.dispose()
    assert indexed == written and len(written) == 40
    assert not any("lạmang" in s or "  " in s for s in indexed)


def test_sigterm_stops_the_relay_and_the_poller(tmp_path: Path) -> None:
    """The running demo also takes a demo mailbox's reply to a tip by SMTP."""
    out, smtp_port = tmp_path / "demo.out", free_port()
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailbridge", "demo", "--dir", str(tmp_path / "demo"),
             "--port", str(free_port()), "--smtp-port", str(smtp_port), "--seed", "1"],
            stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    started: dict[int, str] = {}
    try:
        wait_for(lambda: "Press Ctrl-C to stop." in out.read_text(), "the demo to start", 120)
        tip = email.message_from_bytes(
            maildir_files(tmp_path / "demo" / "mail" / "ncs")[0].read_bytes(),
            policy=default_policy)
        answer = EmailMessage()
        answer["From"], answer["To"], answer["Subject"] = (
            "tinbao@ncs.demo.test", str(tip["Reply-To"]), "Re: " + str(tip["Subject"]))
        answer.set_content("Đồn đã nhận tin, cảm ơn bà con.")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            assert client.send_message(answer) == {}  # 250: add_reply stored it
        started = children(proc.pid)
        commands = sorted(cmd.split()[-1] for cmd in started.values())
        assert commands == ["poll", "serve"], started
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, out.read_text()
        assert [pid for pid in started if alive(pid)] == [], out.read_text()
    finally:
        for pid in [proc.pid, *started]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_a_rate_limited_tip_is_a_runtime_failure_not_a_bug(tmp_path: Path) -> None:
    (tmp_path / "mailbridge.toml").write_text(relay_toml(MAILDIR_STATION, rate=1),
                                              encoding="utf-8")
    settings = load_config(tmp_path / "mailbridge.toml", env={"MAILBRIDGE_SECRET": SECRET})
    with relay_in_thread(settings) as base:
        submit_sample(base, "ncs", "cho", "drugs", "Tin thứ nhất")
        with pytest.raises(RuntimeFailure, match="rate limit: raise relay.rate_limit_per_hour"):
            submit_sample(base, "ncs", "cho", "drugs", "Tin thứ hai")


def test_more_seeds_than_an_old_demo_config_allows_is_one_config_line(tmp_path: Path) -> None:
    config = write_demo_config(tmp_path, free_port())
    text = config.read_text(encoding="utf-8")
    assert f"rate_limit_per_hour = {DEMO_RATE}" in text
    config.write_text(text.replace(f"rate_limit_per_hour = {DEMO_RATE}", ""), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"--seed 31 is more than relay.rate_limit_per_hour "
                                          r"\(30\)"):
        run_demo(tmp_path, seed=31)
    assert not (tmp_path / "relay.db").exists()  # refused before starting anything
