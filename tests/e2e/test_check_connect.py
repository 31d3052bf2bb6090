"""`mailbridge check --connect` logs in to the real SMTP and IMAP servers, as delivery and
the poller will, and names what fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.support import ROOT, free_port, smtp_station, write_config
from tests.servers.mailstack import MailStack


def _config(tmp_path: Path, stack: MailStack, password: str) -> Path:
    imap = f"""[stations.imap]
host = "127.0.0.1"
port = {stack.imaps_port}
tls = "tls"
username = "station1@example.test"
password_env = "STATION_SMTP_PASSWORD"
folders = ["INBOX"]
ca_file = "{stack.ca_file}"
"""
    config = write_config(tmp_path, free_port(), smtp_station(stack) + imap)
    with (tmp_path / ".env").open("a") as env:
        env.write(f"STATION_SMTP_PASSWORD={password}\n")
    return config


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbridge", "--config", str(config),
                           "check", "--connect"], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=False, env={"PATH": ""})


@pytest.mark.servers
def test_connect_logs_in_to_smtp_and_imap(tmp_path: Path, mailstack: MailStack) -> None:
    result = _check(_config(tmp_path, mailstack, "secret"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "  smtp: ok" in result.stdout and "  imap: ok" in result.stdout


@pytest.mark.servers
def test_connect_names_a_wrong_password(tmp_path: Path, mailstack: MailStack) -> None:
    result = _check(_config(tmp_path, mailstack, "wrong-password"))
    assert result.returncode == 3
    lines = result.stdout.splitlines()
    assert any(line.startswith("  smtp: SMTPAuthenticationError") for line in lines), lines
    assert any(line.startswith("  imap: LoginError") for line in lines), lines
    assert "wrong-password" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
