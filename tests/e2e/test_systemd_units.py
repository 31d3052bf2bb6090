"""The shipped units under a real systemd (tests/e2e/systemd_box.py): `mailbridge install`
puts them in place, systemd runs them with their own ExecStart, User=, hardening and
EnvironmentFile=, a tip goes through, the journal holds no client address, a stop is
clean, and the daily purge runs. tests/unit/test_systemd.py checks the same units offline."""

from __future__ import annotations

import email
import email.policy
import stat
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from mailbridge.core.message import HEADER_REF
from tests.e2e.support import MAILDIR_STATION, ROOT, free_port, maildir_files, relay_toml, send_tip
from tests.e2e.systemd_box import MAILBRIDGE, Box, booted_systemd, why_not
from tests.waiting import wait_for

pytestmark = [pytest.mark.servers, pytest.mark.timeout(180)]

RELAY = "mailbridge-relay.service"
STATE = "/var/lib/mailbridge-relay"
# The relay listens on 127.0.0.2; a client reaching it over loopback comes from 127.0.0.1,
# so that address in the journal could only be the client's.
LISTEN = "127.0.0.2"
CLIENT = "127.0.0.1"
TEXT = "Tối qua có ba người lạ mang hàng qua suối"


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    reason = why_not()
    if reason is not None:
        pytest.skip(f"systemd cannot boot in a namespace here: {reason}")
    with booted_systemd(tmp_path / "box") as booted:
        yield booted


def relay_config(port: int) -> str:
    """support.py's relay config with its files in the unit's state folder."""
    station = MAILDIR_STATION.replace('"mail/ncs"', f'"{STATE}/mail/ncs"')
    return (relay_toml(station, port=port, extra=f'listen_host = "{LISTEN}"\n')
            .replace("sqlite:///relay.db", f"sqlite:///{STATE}/relay.db")
            .replace("sqlite:///ledger.db", f"sqlite:///{STATE}/ledger.db"))


def answers(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def uid(box: Box, user: str) -> int:
    for line in box.path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2])
    raise AssertionError(f"{user} is not in the box's /etc/passwd")


def test_the_installed_relay_unit_serves_delivers_and_stops_under_systemd(box: Box) -> None:
    install = box.run(MAILBRIDGE, "install", "--role", "relay", "--source", str(ROOT),
                      timeout=120)
    assert install.returncode == 0, install.stdout + install.stderr
    port = free_port()
    box.path("/etc/mailbridge/relay.toml").write_text(relay_config(port), encoding="utf-8")

    start = box.run("systemctl", "start", RELAY, timeout=120)
    assert start.returncode == 0, start.stderr + box.journal()
    base = f"http://{LISTEN}:{port}"
    wait_for(lambda: answers(base), "the relay under systemd to answer", timeout=60,
             interval=0.2)
    running = box.show(RELAY, "ActiveState", "MainPID", "User")
    assert (running["ActiveState"], running["User"]) == ("active", "mailbridge-relay")
    assert int(running["MainPID"]) > 0

    answer = send_tip(base, "/s/ncs/cho", TEXT)
    assert (answer.status, answer.ref[:4]) == (200, "NCS-"), answer.page[:500]
    maildir = box.path(f"{STATE}/mail/ncs")
    wait_for(lambda: maildir_files(maildir), "the tip in the station's Maildir", timeout=30)
    [mail] = maildir_files(maildir)
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message[HEADER_REF] == answer.ref
    body = message.get_body(("plain",))
    assert body is not None and TEXT in body.get_content()
    info = mail.stat()  # written by the unit's user, under its UMask=
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (uid(box, "mailbridge-relay"), 0o600)

    journal = box.journal()
    assert "outbox: delivered station=ncs" in journal  # the relay's lines are in it
    assert CLIENT not in journal and "python-httpx" not in journal, journal

    stop = box.run("systemctl", "stop", RELAY, timeout=120)
    assert stop.returncode == 0, stop.stderr
    # A stop past TimeoutStopSec= is Result=timeout, and the relay SIGKILLed.
    stopped = box.show(RELAY, "ActiveState", "Result", "ExecMainStatus", "MainPID")
    assert stopped == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0",
                       "MainPID": "0"}, box.journal("-u", RELAY)
    assert not answers(base)

    # The daily purge, as its timer starts it (Type=oneshot: start returns once it is done).
    purge = box.run("systemctl", "start", "mailbridge-purge@relay.service", timeout=120)
    assert purge.returncode == 0, purge.stderr + box.journal("-u", "mailbridge-purge@relay")
    assert box.show("mailbridge-purge@relay.service", "Result", "ExecMainStatus", "User") == {
        "Result": "success", "ExecMainStatus": "0", "User": "mailbridge-relay"}
