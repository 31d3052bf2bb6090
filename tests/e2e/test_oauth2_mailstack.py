"""XOAUTH2 against the real Dovecot and Postfix, as Gmail and Microsoft 365 sign in.

A second mail stack whose Dovecot has an oauth2 passdb: it asks a stand-in of the
provider (tests/servers/authserver.py) whether each access token is active, and
Postfix's SASL goes through the same Dovecot. The stand-in also serves the token
endpoint the poller, the relay's delivery and the officers' replies refresh at.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from rich.console import Console

from mailbridge.checks import check_imap
from mailbridge.config import Settings, load_config
from mailbridge.core.keytext import public_key_text
from mailbridge.relay.outbox import deliver_smtp
from mailbridge.station import reply
from mailbridge.station.poller.run import poll
from tests.e2e.support import ROOT
from tests.servers import authserver
from tests.servers.authserver import AuthServer
from tests.servers.mailstack import MailStack
from tests.station.poller_helpers import RELAY_KEY, append, new_ref, new_user, tip
from tests.waiting import wait_for

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def oauth() -> Iterator[tuple[MailStack, AuthServer]]:
    """The stand-in provider and a mail stack that checks tokens with it."""
    with authserver.running("nobody@example.test") as auth:
        stack = MailStack(Path(tempfile.mkdtemp(prefix="mailstack-oauth2-", dir="/tmp")),
                          oauth2_introspection_url=f"{auth.url}/introspect")
        stack.install()
        try:
            stack.start()
            yield stack, auth
        finally:
            stack.stop()
            shutil.rmtree(stack.root, ignore_errors=True)


@pytest.fixture
def stack(oauth: tuple[MailStack, AuthServer]) -> MailStack:
    return oauth[0]


@pytest.fixture
def auth(oauth: tuple[MailStack, AuthServer]) -> AuthServer:
    """The stand-in, for a mailbox of this test's own (auth.user), granting the scope."""
    state = oauth[1]
    state.user = new_user(oauth[0])
    state.scope = authserver.SCOPE
    state.refreshes = 0
    return state


def _oauth2(auth: AuthServer, env: str) -> str:
    return f"""token_url = "{auth.url}/token"
scope = "{authserver.SCOPE}"
client_id = "{authserver.CLIENT_ID}"
refresh_token_env = "{env}"
"""


def write_config(tmp_path: Path, stack: MailStack, auth: AuthServer, *,
                 folders: str = '["INBOX"]', refresh_token: str = "") -> Path:
    """Both roles for station ncs at the stand-in's mailbox, every login by XOAUTH2."""
    server = f"""host = "127.0.0.1"
tls = "starttls"
ca_file = "{stack.ca_file}"
username = "{auth.user}"
"""
    config = tmp_path / "mailbridge.toml"
    config.write_text(f"""
[relay]
address = "tips@relay.example.test"
domain = "relay.example.test"
secret_env = "MAILBRIDGE_SECRET"
database = "sqlite:///relay.db"
[ledger]
database = "sqlite:///ledger.db"
relay_public_keys = ["{public_key_text(RELAY_KEY)}"]
[[stations]]
id = "ncs"
name = "NCS"
mailbox = "{auth.user}"
sent_folder = "Sent"
[stations.smtp]
port = {stack.smtp_port}
{server}[stations.smtp.oauth2]
{_oauth2(auth, "NCS_REFRESH")}[stations.reply_smtp]
port = {stack.smtp_port}
{server}[stations.reply_smtp.oauth2]
{_oauth2(auth, "NCS_REFRESH")}[stations.imap]
port = {stack.imap_port}
folders = {folders}
{server}[stations.imap.oauth2]
{_oauth2(auth, "NCS_REFRESH")}""", encoding="utf-8")
    (tmp_path / ".env").write_text(
        f"MAILBRIDGE_SECRET={'s' * 40}\nNCS_REFRESH={refresh_token or auth.new_refresh_token()}\n")
    return config


def _poll(settings: Settings) -> str:
    out = io.StringIO()
    assert poll(settings, once=True, console=Console(file=out, width=200)) == 0, out.getvalue()
    return out.getvalue().strip()


def test_the_poller_refreshes_an_expired_token_and_goes_on(
        tmp_path: Path, stack: MailStack, auth: AuthServer) -> None:
    settings = load_config(write_config(tmp_path, stack, auth), env={}, role="station")
    append(stack, auth.user, [tip(new_ref())])
    assert _poll(settings) == "poll ncs: new=1 tips=1"
    assert auth.refreshes == 1
    assert _poll(settings) == "poll ncs: no changes"
    assert auth.refreshes == 1  # the token is kept while it lasts

    auth.expire_access_tokens()  # Dovecot's check now answers "not active"
    append(stack, auth.user, [tip(new_ref())])
    assert _poll(settings) == "poll ncs: new=1 tips=1"
    assert auth.refreshes == 2


def test_a_revoked_refresh_token_is_one_clear_line(
        tmp_path: Path, stack: MailStack, auth: AuthServer) -> None:
    revoked = auth.new_refresh_token()
    auth.revoke(revoked)
    config = write_config(tmp_path, stack, auth, refresh_token=revoked)
    result = subprocess.run([sys.executable, "-m", "mailbridge", "--config", str(config),
                             "poll", "--once"], capture_output=True, text=True, cwd=ROOT,
                            timeout=60, check=False, env={"PATH": ""})
    assert result.returncode == 2, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "stations.ncs.imap.oauth2: the refresh token in $NCS_REFRESH was refused" in lines[0]
    assert "invalid_grant" in lines[0] and "mailbridge oauth2-token" in lines[0]
    assert revoked not in lines[0]


def _message(sender: str, to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content("hello\n")
    return msg


def _arrived(stack: MailStack, address: str, subject: str) -> Callable[[], bool]:
    def found() -> bool:
        with stack.imap_client(address, "secret") as client:
            client.select_folder("INBOX", readonly=True)
            return bool(client.search(["SUBJECT", subject]))
    return found


def test_delivery_and_replies_sign_in_to_postfix_with_xoauth2(
        tmp_path: Path, stack: MailStack, auth: AuthServer) -> None:
    """Postfix offers Dovecot's XOAUTH2: the relay's aiosmtplib and the officers'
    smtplib both use it, and both renew a token the server no longer takes."""
    settings = load_config(write_config(tmp_path, stack, auth), env={})
    station = settings.stations["ncs"]
    assert station.smtp is not None and station.reply_smtp is not None
    for attempt in range(2):
        subject = f"xoauth2 {uuid.uuid4().hex}"
        data = bytes(_message("tips@relay.example.test", auth.user, subject))
        asyncio.run(deliver_smtp(station.smtp, "tips@relay.example.test", auth.user, data,
                                 local_hostname="relay.example.test"))
        wait_for(_arrived(stack, auth.user, subject), "the tip in the mailbox")
        answer = f"reply {uuid.uuid4().hex}"
        reply.send(station.reply_smtp, _message(auth.user, auth.user, answer))
        wait_for(_arrived(stack, auth.user, answer), "the reply in the mailbox")
        assert auth.refreshes == 2 * (attempt + 1)  # a token per account, renewed if refused
        auth.expire_access_tokens()


ACCOUNTS = ("  smtp ", "  imap ", "  reply_smtp ")


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbridge", "--config", str(config),
                           "check", "--connect"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, check=False, env={"PATH": ""})


def test_check_connect_says_ok_or_the_exact_oauth2_problem(
        tmp_path: Path, stack: MailStack, auth: AuthServer) -> None:
    with stack.imap_client(auth.user, "secret") as client:
        client.create_folder("Sent")  # stations.sent_folder, where replies are filed
    config = write_config(tmp_path, stack, auth)
    result = _check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    accounts = [line for line in result.stdout.splitlines() if line.startswith(ACCOUNTS)]
    assert accounts == [f"  smtp 127.0.0.1:{stack.smtp_port}: ok",
                        f"  imap 127.0.0.1:{stack.imap_port}: ok",
                        f"  reply_smtp 127.0.0.1:{stack.smtp_port}: ok"]

    auth.scope = "https://other.example.test/"  # the app was never granted mail access
    result = _check(config)
    assert result.returncode == 3
    accounts = [line for line in result.stdout.splitlines() if line.startswith(ACCOUNTS)]
    assert [line.split(": oauth2: ")[1] for line in accounts] == [
        f"stations.ncs.{table}.oauth2: the access token lacks the scope {authserver.SCOPE}: "
        f"grant it to the app (API permissions, with consent), then make a new one with "
        f"`mailbridge oauth2-token --token-url {auth.url}/token --client-id "
        f"{authserver.CLIENT_ID}` and put it in $NCS_REFRESH"
        for table in ("smtp", "imap", "reply_smtp")]

    auth.scope = authserver.SCOPE
    revoked = auth.new_refresh_token()
    auth.revoke(revoked)
    result = _check(write_config(tmp_path, stack, auth, refresh_token=revoked))
    accounts = [line for line in result.stdout.splitlines() if line.startswith(ACCOUNTS)]
    assert len(accounts) == 3 and all(
        ": oauth2: stations.ncs." in line and "(invalid_grant: revoked, expired, or made for "
        "another client)" in line for line in accounts), accounts
    assert revoked not in result.stdout + result.stderr


def test_a_server_without_xoauth2_is_named(tmp_path: Path, mailstack: MailStack,
                                           auth: AuthServer) -> None:
    """The session's stack takes passwords only: the poller says so before any token."""
    settings = load_config(write_config(tmp_path, mailstack, auth), env={}, role="station")
    imap = settings.stations["ncs"].imap
    assert imap is not None
    assert check_imap(imap) == (f"PollError: the IMAP server 127.0.0.1:{mailstack.imap_port} "
                                "does not offer XOAUTH2: check imap.host, or remove "
                                "imap.oauth2 and use password_env")
    assert auth.refreshes == 0
