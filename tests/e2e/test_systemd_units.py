"""The shipped units under a real systemd (tests/e2e/systemd_box.py): `mailbridge install`
puts them in place, systemd runs them with their own ExecStart, User=, hardening and
EnvironmentFile=, a tip goes through (into a Maildir; through the test stack's Postfix
and Dovecot into the poller's ledger), the journal holds no client address, a stop is
clean, and the daily purge runs and its timer waits. tests/unit/test_systemd.py checks the
same units offline."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import stat
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from mailbridge.core.message import HEADER_REF
from tests.e2e.support import (
    MAILDIR_STATION,
    free_port,
    maildir_files,
    relay_toml,
    send_tip,
    smtp_station,
    station_example_on,
)
from tests.e2e.systemd_box import (
    CHECKOUT,
    MAILBRIDGE,
    Box,
    CannotBoot,
    booted_systemd,
    why_not,
)
from tests.servers.mailstack import MailStack
from tests.waiting import wait_for

pytestmark = [pytest.mark.servers, pytest.mark.timeout(240)]

RELAY = "mailbridge-relay.service"
POLLER = "mailbridge-poller.service"
STATE = "/var/lib/mailbridge-relay"
LEDGER = "/var/lib/mailbridge-station/ledger.db"
CA = "/etc/mailbridge/mailstack-ca.pem"
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
    try:
        with booted_systemd(tmp_path / "box") as booted:
            yield booted
    except CannotBoot as exc:
        pytest.skip(f"systemd cannot boot in a namespace here: {exc}")


def install(box: Box, role: str) -> None:
    proc = box.run(MAILBRIDGE, "install", "--role", role, "--source", CHECKOUT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def relay_config(port: int, station: str, workers: int = 1) -> str:
    """support.py's relay config with its files in the unit's state folder."""
    return (relay_toml(station, port=port, extra=f'listen_host = "{LISTEN}"\n',
                       workers=workers)
            .replace("sqlite:///relay.db", f"sqlite:///{STATE}/relay.db")
            .replace("sqlite:///ledger.db", f"sqlite:///{STATE}/ledger.db"))


def answers(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def start(box: Box, unit: str, user: str) -> None:
    """``systemctl start``, then the unit running as its user."""
    proc = box.run("systemctl", "start", unit, timeout=120)
    assert proc.returncode == 0, proc.stderr + box.journal()
    running = box.show(unit, "ActiveState", "MainPID", "User")
    assert (running["ActiveState"], running["User"]) == ("active", user), box.journal()
    assert int(running["MainPID"]) > 0


def start_relay(box: Box, config: str, port: int) -> str:
    """The installed relay with ``config``, answering; its URL."""
    box.path("/etc/mailbridge/relay.toml").write_text(config, encoding="utf-8")
    start(box, RELAY, "mailbridge-relay")
    base = f"http://{LISTEN}:{port}"
    wait_for(lambda: answers(base), "the relay under systemd to answer", timeout=60,
             interval=0.2)
    return base


def stop(box: Box, unit: str) -> None:
    """``systemctl stop``: a clean exit. A stop past TimeoutStopSec= would be
    Result=timeout and a SIGKILL, a crash Result=signal or exit-code."""
    proc = box.run("systemctl", "stop", unit, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stopped = box.show(unit, "ActiveState", "Result", "ExecMainStatus", "MainPID")
    assert stopped == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0",
                       "MainPID": "0"}, box.journal("-u", unit)


def no_client_in_journal(box: Box) -> None:
    journal = box.journal()
    assert "outbox: delivered station=ncs" in journal  # the relay's lines are in it
    assert CLIENT not in journal and "python-httpx" not in journal, journal


def uid(box: Box, user: str) -> int:
    for line in box.path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2])
    raise AssertionError(f"{user} is not in the box's /etc/passwd")


@pytest.mark.parametrize("workers", [1, 2])
def test_the_installed_relay_unit_serves_delivers_and_stops_under_systemd(
        box: Box, workers: int) -> None:
    """One process, and forked web workers (pidfds, PR_SET_PDEATHSIG) under the unit's
    system call filter."""
    install(box, "relay")
    port = free_port()
    station = MAILDIR_STATION.replace('"mail/ncs"', f'"{STATE}/mail/ncs"')
    base = start_relay(box, relay_config(port, station, workers), port)
    assert f", {workers} web worker" in box.journal("-u", RELAY)

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

    no_client_in_journal(box)
    stop(box, RELAY)
    assert not answers(base)

    # The daily purge, as its timer starts it (Type=oneshot: start returns once it is done).
    purge = box.run("systemctl", "start", "mailbridge-purge@relay.service", timeout=120)
    assert purge.returncode == 0, purge.stderr + box.journal("-u", "mailbridge-purge@relay")
    assert box.show("mailbridge-purge@relay.service", "Result", "ExecMainStatus", "User") == {
        "Result": "success", "ExecMainStatus": "0", "User": "mailbridge-relay"}
    timer = box.run("systemctl", "start", "mailbridge-purge@relay.timer")
    assert timer.returncode == 0, timer.stderr
    waiting = box.show("mailbridge-purge@relay.timer", "SubState", "NextElapseUSecRealtime")
    assert waiting["SubState"] == "waiting" and waiting["NextElapseUSecRealtime"], waiting


def station_config(box: Box, stack: MailStack, relay_key: str) -> str:
    """The installed station skeleton, pointed at the test stack's Dovecot and the relay."""
    text = station_example_on(
        stack, box.path("/etc/mailbridge/station.toml").read_text(encoding="utf-8"),
        ca_file=CA, more=(
            ('address = "tips@relay.example.org"', 'address = "tips@relay.example.test"'),
            ('mailbox = "tinbao.ncs@example.org"', 'mailbox = "station1@example.test"')))
    return re.sub(r"relay_public_keys = \[[^]]*\]", f'relay_public_keys = ["{relay_key}"]',
                  text)


_COUNT = ("import os, sqlite3, sys; os.umask(0o077); db = sqlite3.connect(sys.argv[1]); "
          "print(db.execute('SELECT count(*) FROM tips WHERE ref = ?', (sys.argv[2],))"
          ".fetchone()[0])")


def indexed(box: Box, ref: str) -> bool:
    """The ledger has the tip, read in the box as the station's user (as officers do:
    a root-owned -shm file would lock the poller out)."""
    proc = box.run("setpriv", "--reuid=mailbridge-station", "--regid=mailbridge-station",
                   "--init-groups", "/opt/mailbridge/bin/python3", "-c", _COUNT, LEDGER, ref)
    return proc.stdout.strip() == "1"  # an error before the poller's schema is not yet


def test_the_installed_poller_unit_indexes_what_the_relay_unit_sent(
        box: Box, mailstack: MailStack) -> None:
    """Both roles in one box: the relay delivers through the stack's Postfix, the poller
    reads it back from Dovecot into its ledger, each unit as its own user."""
    install(box, "relay")
    install(box, "station")
    shutil.copyfile(mailstack.ca_file, box.path(CA))
    box.path(CA).chmod(0o644)
    with box.path("/etc/mailbridge/relay.env").open("a", encoding="utf-8") as env:
        env.write("STATION_SMTP_PASSWORD=secret\n")
    port = free_port()
    station = smtp_station(mailstack, "SYSD").replace(str(mailstack.ca_file), CA)
    base = start_relay(box, relay_config(port, station), port)
    answer = send_tip(base, "/s/ncs/cho", TEXT)
    assert (answer.status, answer.ref[:5]) == (200, "SYSD-"), answer.page[:500]
    wait_for(lambda: "delivered station=ncs" in box.journal("-u", RELAY),
             "the relay to hand the tip to Postfix", timeout=60, interval=0.2)
    found = re.search(r"relay signing key: (\S+)", box.journal("-u", RELAY))
    assert found is not None

    box.path("/etc/mailbridge/station.toml").write_text(
        station_config(box, mailstack, found.group(1)), encoding="utf-8")
    box.path("/etc/mailbridge/station.env").write_text("MAILBRIDGE_NCS_IMAP_PASSWORD=secret\n",
                                                        encoding="utf-8")
    start(box, POLLER, "mailbridge-station")
    wait_for(lambda: indexed(box, answer.ref), "the poller to index the tip", timeout=90,
             interval=0.5)
    # The mail's Received: lines name 127.0.0.1 (the relay, to Postfix); the poller's
    # journal does not. (The relay's names Postfix's address, 127.0.0.1 too.)
    journal = box.journal("-u", POLLER)
    assert "poll ncs: " in journal and CLIENT not in journal, journal

    stop(box, POLLER)
    stop(box, RELAY)
