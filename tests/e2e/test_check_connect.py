"""`mailbridge check --connect` logs in to the real SMTP and IMAP servers, as delivery and
the poller will, and names what fails."""

from __future__ import annotations

import gc
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailbridge.checks import run_check
from mailbridge.config import SmtpSettings, load_config
from mailbridge.relay import outbox
from mailbridge.station.poller.imap import ImapConnection
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
    assert f"  smtp 127.0.0.1:{mailstack.smtp_port}: ok" in result.stdout
    assert f"  imap 127.0.0.1:{mailstack.imaps_port}: ok" in result.stdout


@pytest.mark.servers
def test_connect_names_a_wrong_password(tmp_path: Path, mailstack: MailStack) -> None:
    result = _check(_config(tmp_path, mailstack, "wrong-password"))
    assert result.returncode == 3
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"  smtp 127.0.0.1:{mailstack.smtp_port}: auth: ")
               for line in lines), lines
    assert any(line.startswith(f"  imap 127.0.0.1:{mailstack.imaps_port}: auth: ")
               for line in lines), lines
    assert "wrong-password" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.servers
def test_connect_uses_the_delivery_and_poller_connections(
        tmp_path: Path, mailstack: MailStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a copy of them: a check that passes must mean delivery and the poller log in."""
    used: list[str] = []
    smtp_client, connect = outbox.smtp_client, ImapConnection.connect

    def delivery_client(smtp: SmtpSettings, **kwargs: Any) -> Any:
        used.append("smtp")
        return smtp_client(smtp, **kwargs)

    def poller_connect(self: ImapConnection) -> None:
        used.append("imap")
        connect(self)

    monkeypatch.setattr(outbox, "smtp_client", delivery_client)
    monkeypatch.setattr(ImapConnection, "connect", poller_connect)
    out = io.StringIO()
    settings = load_config(_config(tmp_path, mailstack, "secret"), env={})
    assert run_check(settings, connect=True, out=out) == 0, out.getvalue()
    assert used == ["smtp", "imap"]


@pytest.mark.servers
def test_connect_names_dns_tls_and_missing_folders(tmp_path: Path, mailstack: MailStack) -> None:
    """One line per account, starting with what to look at."""
    config = _config(tmp_path, mailstack, "secret")
    text = config.read_text()
    text = text.replace('folders = ["INBOX"]', 'folders = ["INBOX", "Sent Items"]')
    text = text.replace(f'ca_file = "{mailstack.ca_file}"\n', "", 1)  # smtp: default trust
    text = text.replace('host = "127.0.0.1"\nport = ' + str(mailstack.imaps_port),
                        'host = "mail.example.invalid"\nport = ' + str(mailstack.imaps_port))
    config.write_text(text)
    lines = _check(config).stdout.splitlines()
    smtp = next(line for line in lines if line.startswith("  smtp "))
    assert smtp.startswith(f"  smtp 127.0.0.1:{mailstack.smtp_port}: TLS: the certificate of "
                           "127.0.0.1 is not trusted"), lines
    imap = next(line for line in lines if line.startswith("  imap "))
    assert imap.startswith("  imap mail.example.invalid:"), lines
    assert ": DNS: mail.example.invalid does not resolve" in imap, lines

    config.write_text(text.replace('host = "mail.example.invalid"', 'host = "127.0.0.1"'))
    lines = _check(config).stdout.splitlines()
    imap = next(line for line in lines if line.startswith("  imap "))
    assert imap.startswith(f"  imap 127.0.0.1:{mailstack.imaps_port}: folders: 'Sent Items' "
                           "not found; the server has "), lines
    assert "'INBOX'" in imap, lines


@pytest.mark.servers
def test_an_in_process_check_leaves_no_connection_open(tmp_path: Path,
                                                       mailstack: MailStack) -> None:
    """After STARTTLS the socket closes only once the server answered the TLS close; a
    check that returned before that left it open for the collector to find."""
    settings = load_config(_config(tmp_path, mailstack, "secret"), env={})
    run_check(settings, connect=True, out=io.StringIO())  # what a first call opens for good
    before = sorted(os.listdir("/proc/self/fd"))
    for _ in range(10):
        assert run_check(settings, connect=True, out=io.StringIO()) == 0
    assert sorted(os.listdir("/proc/self/fd")) == before
    gc.collect()  # a socket left open warns here, and the warning fails the test
