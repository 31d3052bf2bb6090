"""The IMAP poller when things break: scenarios 1, 2, 6 and 7 of the poller rules."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from bench.delayproxy import DelayProxy
from mailbridge.errors import PollError
from mailbridge.station.ledger.models import (
    FolderState,
    Location,
    MailEvent,
    Message,
    Quarantine,
    Tip,
)
from mailbridge.station.poller.budget import batches_for
from mailbridge.station.poller.imap import ImapConnection
from mailbridge.station.poller.sync import DEFAULT_MEMORY_MB
from mailbridge.station.records import Counts, MessageKind
from tests.servers.mailstack import MailStack
from tests.station.poller_helpers import (
    Ledger,
    append,
    imap_settings,
    new_ref,
    plain,
    run_in_thread,
    seed_maildir,
    tip,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.servers
ROOT = Path(__file__).resolve().parents[2]
CHUNK = batches_for(DEFAULT_MEMORY_MB).messages  # the default's chunk of small mail


def _assert_exactly_once(ledger: Ledger, total: int) -> None:
    with ledger.sessions() as s:
        uids = s.scalars(select(Location.uid)).all()
        refs = s.scalars(select(Tip.ref)).all()
    assert sorted(uids) == list(range(1, total + 1))
    assert len(refs) == len(set(refs)) == total
    assert ledger.count(Message) == total


@pytest.mark.parametrize("mode", ["before", "after"])
def test_kill_9_mid_batch_loses_and_duplicates_nothing(
        mailstack: MailStack, address: str, ledger: Ledger, mode: str) -> None:
    """Scenario 1: SIGKILL just before / just after the 2nd batch commits."""
    total = 2 * CHUNK + 50
    seed_maildir(mailstack, address, (tip(new_ref(), f"tin {i}") for i in range(total)))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.station.killpoll", ledger.url,
         str(ledger.store.attachments_dir), address, str(mailstack.imap_port), mode, "2"],
        cwd=ROOT, capture_output=True, timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    committed = CHUNK * (1 if mode == "before" else 2)
    with ledger.sessions() as s:
        state = s.scalars(select(FolderState)).one()
        uids = s.scalars(select(Location.uid)).all()
    assert ledger.count(Tip) == committed
    assert state.last_uid == committed == max(uids)  # the cursor is never ahead of the rows
    assert ledger.poll(imap_settings(mailstack, address)).new == total - committed
    _assert_exactly_once(ledger, total)


@pytest.mark.parametrize("how", ["uidlist-removed", "uidvalidity-bumped"])
def test_uidvalidity_change_rebinds_without_new_tips(
        mailstack: MailStack, address: str, ledger: Ledger, how: str) -> None:
    """Scenario 2: renumbering (dovecot-uidlist removed) and a spurious UIDVALIDITY change."""
    no_id = b"\n".join(line for line in tip(new_ref()).split(b"\n")
                       if not line.lower().startswith(b"message-id:"))
    append(mailstack, address, [tip(new_ref()) for _ in range(5)] + [no_id, plain("x")])
    imap = imap_settings(mailstack, address)
    ledger.poll(imap)
    before = ledger.snapshot()
    old_validity = ledger.store.cursor("INBOX").uidvalidity
    maildir = mailstack.maildir(address)
    if how == "uidlist-removed":
        with contextlib.suppress(subprocess.CalledProcessError):  # 68: nobody logged in
            mailstack.doveadm("kick", address)
        for path in [maildir / "dovecot-uidlist", *maildir.glob("dovecot.index*")]:
            path.unlink()
    else:
        mailstack.doveadm("mailbox", "update", "-u", address, "--uid-validity",
                          str(old_validity + 1000), "INBOX")
    poller = ledger.poller(imap)
    counts = poller.poll()
    poller.conn.close()
    assert ledger.store.cursor("INBOX").uidvalidity != old_validity
    assert (counts.new, counts.tips, counts.rebound) == (0, 0, 7)
    assert ledger.snapshot() == before
    fetched_bodies = [c for c in poller.conn.sent if "BODY.PEEK[]" in c]
    assert len(fetched_bodies) == 1  # only the message without a Message-ID
    assert ledger.count(MailEvent, MailEvent.kind == "rebound") == 1


def test_poison_messages_are_quarantined_and_the_batch_goes_on(
        mailstack: MailStack, address: str, ledger: Ledger) -> None:
    """Scenario 6: bad charsets, 8-bit headers, split words, truncated MIME, a huge message."""
    def mime(charset: str, body: bytes, subject: bytes = b"poison") -> bytes:
        return (b"From: a@example.org\r\nSubject: " + subject + b"\r\nMessage-ID: <" +
                charset.encode() + subject[:5].replace(b"=", b"") + b"@example.org>\r\n"
                b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=" + charset.encode() +
                b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body + b"\r\n")
    cp1258 = b"Ti\xea\xecng Vi\xea\xf2t"
    word = b"=?windows-1258?q?" + "".join(f"={b:02X}" for b in cp1258).encode() + b"?="
    split = b"=?utf-8?q?Ti=E1=BA?= =?utf-8?q?=BFng?="
    truncated = (b"From: a@example.org\r\nSubject: cut\r\nMessage-ID: <cut@example.org>\r\n"
                 b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
                 b"--zz\r\nContent-Type: text/plain\r\n\r\nstill readable\r\n--zz\r\n"
                 b"Content-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n\r\n/9j/4A")
    huge = plain("huge", "x" * 3_000_000)
    after = tip(new_ref(), "tin sau thư hỏng")
    append(mailstack, address, [
        mime("bogus", "Có hàng lậu".encode()), mime("iso-8859-8-i", "שלום".encode("iso-8859-8")),
        mime("windows-1258", cp1258, word), mime("utf-8", b"8bit", "Tiếng Việt 8 bit".encode()),
        mime("utf-8", b"split", split), truncated, huge, after,
    ])
    counts = ledger.poll(imap_settings(mailstack, address), max_bytes=1_000_000)
    assert (counts.new, counts.tips, counts.placeholders) == (8, 1, 1)
    assert counts.quarantined == 2  # unknown charset, truncated multipart
    with ledger.sessions() as s:
        by_subject = {m.subject: m for m in s.scalars(select(Message))}
        reasons = sorted(q.reason for q in s.scalars(select(Quarantine)))
        raw_kept = all(q.raw for q in s.scalars(select(Quarantine)))
    assert by_subject["Tiếng Việt"].text_body == "Tiếng Việt"  # cp1258 subject + body, NFC
    assert by_subject["Tiếng Việt 8 bit"].text_body == "8bit"        # raw 8-bit header
    assert by_subject["Tiếng"].kind == MessageKind.OTHER.value       # split encoded-word
    assert by_subject["huge"].kind == MessageKind.PLACEHOLDER.value
    assert by_subject["huge"].size > 3_000_000
    assert by_subject["cut"].text_body == "still readable"
    assert "unknown charset 'bogus'" in reasons[1] or "unknown charset 'bogus'" in reasons[0]
    assert raw_kept


def test_stalled_server_mid_fetch_times_out_and_reconnects(
        mailstack: MailStack, address: str, ledger: Ledger) -> None:
    """Scenario 7a: the server stops answering in the middle of a FETCH."""
    total = 2 * CHUNK
    seed_maildir(mailstack, address, (tip(new_ref(), "x" * 500) for _ in range(total)))
    with DelayProxy(mailstack.host, mailstack.imap_port, stall_after=120_000) as proxy:
        imap = imap_settings(mailstack, address, port=proxy.port, timeout=1.5)
        poller = ledger.poller(imap)
        with pytest.raises(PollError, match="timed out"):
            poller.poll()
        partial = ledger.count(Location)
        assert partial < total
        poller.conn.close()
        assert poller.poll().new == total - partial  # a new connection is not stalled
        poller.conn.close()
        assert proxy.connections == 2
    _assert_exactly_once(ledger, total)


@pytest.mark.parametrize("how", ["doveadm-kick", "access-token-expired"])
def test_bye_during_idle_reconnects_without_spinning(
        mailstack: MailStack, address: str, ledger: Ledger, how: str) -> None:
    """Scenario 7b/c: BYE while idling (admin kick, Office 365 token expiry) -> reconnect."""
    with DelayProxy(mailstack.host, mailstack.imap_port) as proxy:
        poller = ledger.poller(imap_settings(mailstack, address, port=proxy.port))
        connects: list[int] = []
        connect = poller.conn.connect

        def counting_connect() -> None:
            connects.append(1)
            connect()

        poller.conn.connect = counting_connect  # type: ignore[method-assign]
        reports: list[Counts] = []
        stop = threading.Event()
        thread = run_in_thread(poller, reports, stop, idle_renew=2.0)
        wait_for(lambda: reports and "IDLE" in poller.conn.sent, "the poller in IDLE")
        if how == "doveadm-kick":
            mailstack.doveadm("kick", address)
        else:
            proxy.inject(b"* BYE Session invalidated - AccessTokenExpired\r\n")
        wait_for(lambda: len(connects) >= 2, "a reconnect")
        append(mailstack, address, [tip(new_ref())])
        wait_for(lambda: ledger.count(Tip) == 1, "the tip in the ledger")
        stop.set()
        thread.join(30)  # IDLE is renewed every 2 s here, so the loop sees the stop soon
    assert not thread.is_alive()
    assert len(connects) == 2  # one reconnect, no busy loop of attempts
    assert proxy.connections == 2


def test_unreachable_server_is_a_clear_poll_error(tmp_path: Path) -> None:
    from mailbridge.config import ImapSettings, Secret

    conn = ImapConnection(ImapSettings(host="127.0.0.1", port=1, tls="none", username="u",
                                       password=Secret("p"), timeout=2))
    with pytest.raises(PollError, match="check imap.host"):
        conn.connect()
