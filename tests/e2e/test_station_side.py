"""The admin guide's station-side file (config/station.example.toml), pointed at the test
stack's Dovecot: no relay secret, no SMTP, and every station-side command runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.support import ROOT, station_example_on
from tests.servers.mailstack import MailStack


def _station_file(tmp_path: Path, stack: MailStack) -> Path:
    text = station_example_on(
        stack, (ROOT / "config" / "station.example.toml").read_text(encoding="utf-8"),
        ca_file=stack.ca_file)
    path = tmp_path / "station.toml"
    path.write_text(text, encoding="utf-8")
    (tmp_path / ".env").write_text("MAILBRIDGE_NCS_IMAP_PASSWORD=secret\n", encoding="utf-8")
    return path


def _run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbridge", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
                          env={"PATH": ""})


@pytest.mark.servers
def test_the_guides_station_side_file_checks_upgrades_and_polls(
        tmp_path: Path, mailstack: MailStack) -> None:
    config = _station_file(tmp_path, mailstack)
    check = _run(config, "check", "--connect")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"  imap 127.0.0.1:{mailstack.imaps_port}: ok" in check.stdout
    assert "  smtp " not in check.stdout
    upgrade = _run(config, "db", "upgrade")
    assert upgrade.returncode == 0 and upgrade.stdout.strip() == "ledger database: up to date"
    poll = _run(config, "poll", "--once")
    assert poll.returncode == 0, poll.stdout + poll.stderr
    assert "poll ncs: " in poll.stderr, poll.stdout + poll.stderr  # the summary, counts only
    assert not (tmp_path / "relay.db").exists()
