"""The IMAP poller against a real Dovecot: scenarios 3, 4, 5, 8, 9 and 10 of the poller rules."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from sqlalchemy import select

from mailbridge.station.ledger.models import (
    FolderState,
    Location,
    MailEvent,
    Message,
    Quarantine,
    Tip,
)
from mailbridge.station.poller.budget import SLOT_BYTES, Batches
from mailbridge.station.poller.imap import ImapConnection
from mailbridge.station.poller.sync import ImapPoller
from mailbridge.station.records import Counts, MessageKind
from tests.servers.mailstack import MailStack
from tests.station.poller_helpers import (
    PASSWORD,
    RELAY_ID,
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


def test_officer_flags_elsewhere_become_events_and_seen_is_untouched(
        mailstack: MailStack, address: str, ledger: Ledger) -> None:
    """Scenario 3: reads/flags by an officer in another client."""
    append(mailstack, address, [tip(new_ref()), tip(new_ref()), plain("other mail")])
    imap = imap_settings(mailstack, address)
    assert ledger.poll(imap).new == 3
    with mailstack.imap_client(address, PASSWORD) as officer:
        officer.select_folder("INBOX")
        uids = sorted(officer.search("ALL"))
        assert all(b"\\Seen" not in f[b"FLAGS"] for f in officer.fetch(uids, ["FLAGS"]).values())
        officer.add_flags([uids[0]], [b"\\Seen", b"\\Flagged"])
        officer.add_flags([uids[1]], [b"Verified"])
    poller = ledger.poller(imap)
    counts = poller.poll()
    poller.conn.close()
    assert (counts.new, counts.flags) == (0, 2)
    verbs = {" ".join(c.split()[:2]) if c.startswith("UID") else c.split()[0]
             for c in poller.conn.sent}
    assert verbs <= {"CAPABILITY", "LOGIN", "ENABLE", "STATUS", "EXAMINE", "NOOP",
                     "UID SEARCH", "UID FETCH", "IDLE", "LOGOUT"}  # never SELECT or STORE
    with ledger.sessions() as s:
        details = sorted(e.detail for e in s.scalars(select(MailEvent).where(
            MailEvent.kind == "flags")))
        flags = {loc.uid: loc.flags for loc in s.scalars(select(Location))}
    assert details == ["+Verified", "+\\Flagged +\\Seen"]
    assert flags[uids[0]] == "\\Flagged \\Seen"
    with mailstack.imap_client(address, PASSWORD) as check:
        check.select_folder("INBOX", readonly=True)
        seen = [u for u, f in check.fetch(uids, ["FLAGS"]).items() if b"\\Seen" in f[b"FLAGS"]]
    assert seen == [uids[0]]  # only the officer's read; the poller marked nothing


def test_move_copy_expunge_and_delete_keep_every_tip(
        mailstack: MailStack, address: str, ledger: Ledger) -> None:
    """Scenario 4: MOVE, COPY+EXPUNGE, delete -> locations and tombstones, no new/lost tip."""
    refs = [new_ref() for _ in range(3)]
    append(mailstack, address, [tip(r) for r in refs])
    append(mailstack, address, [], folder="Archive")
    append(mailstack, address, [], folder="Done")
    imap = imap_settings(mailstack, address, folders=("INBOX", "Archive", "Done"))
    ledger.poll(imap)
    with mailstack.imap_client(address, PASSWORD) as officer:
        officer.select_folder("INBOX")
        a, b, c = sorted(officer.search("ALL"))
        officer.move([a], "Archive")
        officer.copy([b], "Done")
        officer.delete_messages([b, c])
        officer.expunge()
    poller = ledger.poller(imap)
    counts = poller.poll()
    poller.conn.close()
    assert (counts.new, counts.tips, counts.gone) == (0, 0, 3)
    # Expunges arrive as QRESYNC VANISHED; no full UID listing was needed.
    assert any("VANISHED" in c for c in poller.conn.sent)
    assert not any(c.startswith("SEARCH ALL") or c.startswith("UID SEARCH ALL")
                   for c in poller.conn.sent)
    assert ledger.count(Tip) == 3 and ledger.count(Message) == 3
    with ledger.sessions() as s:
        live = {(s.get(Message, loc.message_pk).ref, loc.folder)  # type: ignore[union-attr]
                for loc in s.scalars(select(Location).where(Location.gone.is_(False)))}
        events = sorted((e.kind, e.folder) for e in s.scalars(select(MailEvent)))
    assert live == {(refs[0], "Archive"), (refs[1], "Done")}
    assert ledger.count(Location, Location.gone.is_(True)) == 3  # tombstones, never deleted
    assert events == [("deleted", "INBOX")] * 3 + [("moved", "Archive"), ("moved", "Done")]


def test_a_reply_to_a_deleted_tip_still_joins_it(
        mailstack: MailStack, address: str, ledger: Ledger) -> None:
    """The ledger keeps a tip whose mail was deleted, so a reply indexed later joins it,
    which an index of the mailbox as it then is could not know (the property test)."""
    ref = new_ref()
    tip_id = f"<{ref}@relay.example.test>"
    imap = imap_settings(mailstack, address)
    append(mailstack, address, [tip(ref, message_id=tip_id)])
    ledger.poll(imap)
    with mailstack.imap_client(address, PASSWORD) as officer:
        officer.select_folder("INBOX")
        officer.delete_messages(officer.search("ALL"))
        officer.expunge()
    append(mailstack, address, [plain("Re: tip", sender=address,
                                      headers={"In-Reply-To": tip_id})])
    counts = ledger.poll(imap)
    assert (counts.gone, counts.new, counts.replies) == (1, 1, 1)
    with ledger.sessions() as s:
        reply = s.scalars(select(Message).where(Message.subject == "Re: tip")).one()
        the_tip = s.scalars(select(Tip).where(Tip.ref == ref)).one()
    assert (reply.kind, reply.tip_id) == (MessageKind.REPLY.value, the_tip.id)


def test_same_message_id_twice_and_missing_message_id(
        mailstack: MailStack, address: str, ledger: Ledger, tmp_path: object) -> None:
    """Scenario 5: one tip for a Message-ID in two folders; a stable synthetic id.

    A relay tip stripped of its Message-ID no longer verifies (the id is signed): it
    is forged, and still gets the same synthetic id wherever it is indexed."""
    twice = tip(new_ref())
    no_id = b"\n".join(line for line in tip(new_ref()).split(b"\n")
                       if not line.lower().startswith(b"message-id:"))
    append(mailstack, address, [twice, no_id])
    append(mailstack, address, [twice, no_id], folder="Archive")
    imap = imap_settings(mailstack, address, folders=("INBOX", "Archive"))
    counts = ledger.poll(imap)
    assert (counts.new, counts.tips, counts.forged) == (2, 1, 1)
    assert ledger.count(Location) == 4
    with ledger.sessions() as s:
        ids = set(s.scalars(select(Message.message_id)))
        copied = s.scalars(select(MailEvent.kind)).all()
    assert any(i.endswith("@sha256.mailbridge.invalid>") for i in ids)
    assert copied == ["copied", "copied"]
    # A second, independent ledger derives the same synthetic id from the same bytes.
    other = Ledger(ledger.url.replace("ledger.db", "again.db"),
                   ledger.store.attachments_dir, address)
    other.poll(imap)
    assert other.snapshot()["messages"].keys() == ledger.snapshot()["messages"].keys()
    other.close()


def test_scale_chunks_and_unchanged_poll_is_one_command(
        mailstack: MailStack, address: str, ledger: Ledger) -> None:
    """Scenario 8: thousands of messages, chunked UID sets, unchanged poll <= 3 commands."""
    total = 3000
    seed_maildir(mailstack, address, (plain(f"bulk {i}", f"message {i}\n") for i in range(total)))
    imap = imap_settings(mailstack, address)
    poller = ledger.poller(imap)
    poller.conn.connect()
    poller.conn.sent.clear()
    assert poller.poll().new == total
    fetches = [c for c in poller.conn.sent if c.startswith("UID FETCH")]
    assert len(fetches) == -(-total // poller.batches.messages)  # small mail: full chunks
    # Compact UID ranges ("1:250"), never 3000 numbers nor imapclient's rejected "1:*".
    assert all(re.match(r"UID FETCH \d+:\d+ \(", c) for c in fetches)

    poller.conn.sent.clear()
    assert not poller.poll().changed()
    assert len(poller.conn.sent) <= 3
    assert poller.conn.sent[-1] == 'STATUS "INBOX" (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)'
    assert set(poller.conn.sent[:-1]) <= {"NOOP"}  # refreshes the selected folder's view

    with mailstack.imap_client(address, PASSWORD) as officer:
        officer.select_folder("INBOX")
        officer.add_flags([officer.search("ALL")[1234]], [b"\\Flagged"])
    poller.conn.sent.clear()
    assert poller.poll().flags == 1
    assert any("CHANGEDSINCE" in c for c in poller.conn.sent)
    assert not any("BODY.PEEK" in c for c in poller.conn.sent)
    poller.conn.close()
    with ledger.sessions() as s:
        state = s.scalars(select(FolderState)).one()
    assert state.last_uid == total and state.message_count == total


def test_auto_replies_bounces_and_loops_never_become_tips(
        mailstack: MailStack, address: str, ledger: Ledger) -> None:
    """Scenario 9: auto-replies, DSN, Return-Path <>, bulk, our own loop header."""
    ref = new_ref()
    dsn = (b"From: MAILER-DAEMON@mx.example.org\r\nTo: s@example.test\r\n"
           b"Subject: Undelivered Mail\r\nMessage-ID: <dsn9@mx.example.org>\r\nMIME-Version: 1.0"
           b"\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\nContent-Type: "
           b"message/delivery-status\r\n\r\nAction: failed\r\n--b--\r\n")
    looped = tip(ref).replace(b"tips@relay.example.test", b"station@example.test")
    append(mailstack, address, [
        plain(f"Auto: [{ref}]", headers={"Auto-Submitted": "auto-replied"}),
        plain("Out of office", headers={"Precedence": "bulk"}),
        plain("bounce", headers={"Return-Path": "<>"}),
        dsn, looped,
    ])
    counts = ledger.poll(imap_settings(mailstack, address))
    assert (counts.new, counts.auto, counts.tips) == (5, 5, 0)
    assert ledger.count(Tip) == 0
    assert ledger.count(Message, Message.kind == MessageKind.AUTO.value) == 5


def test_threading_followups_replies_and_forged_tags(
        mailstack: MailStack, address: str, ledger: Ledger) -> None:
    """Scenario 10: follow-ups and officer replies link; a forged subject tag does not."""
    ref, other_ref = new_ref(), new_ref()
    original = tip(ref, message_id="<t10@relay.example.test>")
    followup = tip(ref, "Thêm: xe máy biển số 24B1", references=("<t10@relay.example.test>",))
    reply = plain("Re: tip", sender=address, headers={"In-Reply-To": "<t10@relay.example.test>"})
    tagged = plain(f"Re: [{ref}] đã xác minh", sender=address)
    forged = plain(f"Re: [{ref}] click here", sender="stranger@example.org")
    odd = plain("Subject[#123]Extra", sender=address)
    # The officer's reply sits in Sent, which is polled first: it must link once the tip arrives.
    append(mailstack, address, [reply], folder="Sent")
    append(mailstack, address, [original, followup, tagged, forged, odd, tip(other_ref)])
    counts = ledger.poll(imap_settings(mailstack, address, folders=("Sent", "INBOX")))
    assert (counts.tips, counts.followups) == (2, 1)
    with ledger.sessions() as s:
        the_tip = s.scalars(select(Tip).where(Tip.ref == ref)).one()
        thread = {m.subject: m.kind for m in s.scalars(select(Message).where(
            Message.tip_id == the_tip.id))}
        forged_row = s.scalars(select(Message).where(
            Message.sender == "stranger@example.org")).one()
        odd_row = s.scalars(select(Message).where(Message.subject == "Subject[#123]Extra")).one()
        first = s.get(Message, the_tip.message_pk)
    assert first is not None and first.message_id == "<t10@relay.example.test>"
    assert sorted(thread.values()) == ["followup", "reply", "reply", "tip"]
    assert forged_row.tip_id is None and "not linked" in forged_row.warning
    assert odd_row.tip_id is None and odd_row.kind == MessageKind.OTHER.value
    assert the_tip.status == "new"


def test_without_condstore_flags_and_expunges_come_from_a_diff(
        mailstack: MailStack, address: str, ledger: Ledger) -> None:
    """Servers without CONDSTORE/QRESYNC: a FLAGS diff and a UID diff find the same changes."""
    append(mailstack, address, [tip(new_ref()) for _ in range(3)])
    poller = ledger.poller(imap_settings(mailstack, address))
    poller.conn.connect()
    poller.conn.condstore = poller.conn.qresync = False  # as if the server lacked them
    assert poller.poll().new == 3
    with mailstack.imap_client(address, PASSWORD) as officer:
        officer.select_folder("INBOX")
        a, b, _c = sorted(officer.search("ALL"))
        officer.add_flags([a], [b"\\Flagged"])
        officer.delete_messages([b])
        officer.expunge()
    counts = poller.poll()
    assert (counts.flags, counts.gone, counts.new) == (1, 1, 0)
    with mailstack.imap_client(address, PASSWORD) as officer:
        officer.select_folder("INBOX")
        officer.add_flags([a], [b"Verified"])  # a flag change alone moves no counter
    assert poller.poll().flags == 1
    poller.conn.close()
    assert not any("CHANGEDSINCE" in c for c in poller.conn.sent)


@pytest.mark.parametrize(("memory_mb", "body", "per_fetch"), [
    (96, 1_000, 96),          # small mail fills a chunk by count: one message per MiB
    (160, 1_000, 160),
    (160, 40_000, 5),         # 40 KB counts at its class's 256 KiB: 1.25 MiB holds five
    (96, 40_000, 3),
])
def test_chunks_follow_the_memory_budget_by_count_and_bytes(
        mailstack: MailStack, address: str, ledger: Ledger, memory_mb: int, body: int,
        per_fetch: int) -> None:
    """ledger.memory_mb sizes a first index's chunks (one FETCH, one commit each)."""
    total = 2 * per_fetch + 1
    seed_maildir(mailstack, address, (plain(f"m {i}", f"{i} " + "x" * body + "\n")
                                      for i in range(total)))
    poller = ImapPoller(ImapConnection(imap_settings(mailstack, address)), ledger.store,
                        relay=RELAY_ID, max_message_bytes=2 * 1024 * 1024, memory_mb=memory_mb)
    commits: list[int] = []
    add_batch = ledger.store.add_batch

    def counted(folder: str, uidvalidity: int, items: Any, last_uid: int, **kw: Any) -> Counts:
        commits.append(len(items))
        return add_batch(folder, uidvalidity, items, last_uid, **kw)
    ledger.store.add_batch = counted  # type: ignore[method-assign]
    poller.conn.connect()
    try:
        assert poller.poll().new == total
    finally:
        poller.conn.close()
    fetched = [len(uid_list(c)) for c in poller.conn.sent if "BODY.PEEK[]" in c]
    assert fetched == commits == [per_fetch, per_fetch, 1]


def test_parsing_in_worker_processes_indexes_exactly_like_in_process(
        mailstack: MailStack, address: str, ledger: Ledger) -> None:
    """The first-index pipeline's workers: same rows, threads, flags and quarantine."""
    ref = new_ref()
    bogus = (b"From: a@example.org\r\nSubject: poison\r\nMessage-ID: <bogus@example.org>\r\n"
             b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=bogus\r\n"
             b"Content-Transfer-Encoding: 8bit\r\n\r\n" + "Có hàng lậu".encode() + b"\r\n")
    append(mailstack, address, [
        tip(ref, message_id=f"<{ref}@relay.example.test>"),
        tip(ref, "thêm thông tin", references=(f"<{ref}@relay.example.test>",)),
        plain("Re: tip", sender=address, headers={"In-Reply-To": f"<{ref}@relay.example.test>"}),
        bogus, plain("other"),
    ], flags=("\\Flagged",))
    imap = imap_settings(mailstack, address)
    in_process = Ledger(ledger.url.replace("ledger.db", "in-process.db"),
                        ledger.store.attachments_dir, address)
    results: list[Any] = []
    for led, parallel_from in ((ledger, 1), (in_process, 10**9)):
        poller = led.poller(imap)
        poller.parallel_from, poller.parser_processes = parallel_from, 2
        poller.batches = Batches(messages=2, bytes=2 * SLOT_BYTES)  # three chunks, two workers
        try:
            results.append(poller.poll())
        finally:
            poller.conn.close()
        with led.sessions() as s:
            quarantined = sorted((q.uid, q.reason, q.raw) for q in s.scalars(select(Quarantine)))
        results.append((led.snapshot(), quarantined))
    in_process.close()
    assert results[0] == results[2] and results[1] == results[3]
    counts, (snapshot, quarantined) = results[0], results[1]
    assert (counts.new, counts.tips, counts.followups, counts.replies, counts.quarantined) == \
        (5, 1, 1, 1, 1)
    assert quarantined[0][2].startswith(b"From: a@example.org")
    assert all(flags == "\\Flagged" for _f, _m, flags in snapshot["live"])


def test_a_change_announced_by_idle_is_indexed_without_status(
        mailstack: MailStack, address: str, ledger: Ledger) -> None:
    """IDLE already said the folder changed: EXAMINE at once (STATUS would re-read it)."""
    append(mailstack, address, [tip(new_ref())])
    poller = ledger.poller(imap_settings(mailstack, address))
    reports: list[Counts] = []
    stop = threading.Event()
    thread = run_in_thread(poller, reports, stop, idle_renew=60.0)
    try:
        wait_for(lambda: reports and "IDLE" in poller.conn.sent, "the poller in IDLE")
        idling = len(poller.conn.sent)
        append(mailstack, address, [tip(new_ref())])
        wait_for(lambda: len(reports) == 2, "the poll after IDLE")
        after_idle = [c.split()[0] for c in poller.conn.sent[idling:]]
    finally:
        stop.set()
        append(mailstack, address, [plain("wake")])  # ends the current IDLE
        thread.join(30)
    assert reports[1].tips == 1
    assert "EXAMINE" in after_idle and "STATUS" not in after_idle


def test_a_folder_idle_does_not_watch_is_checked_every_poll_interval(
        mailstack: MailStack, address: str, ledger: Ledger) -> None:
    """An officer's reply in the sent folder is linked without waiting for new mail."""
    ref = new_ref()
    append(mailstack, address, [tip(ref, message_id=f"<{ref}@relay.example.test>")])
    append(mailstack, address, [plain("older")], folder="Sent")
    poller = ledger.poller(imap_settings(mailstack, address, folders=("INBOX", "Sent")))
    reports: list[Counts] = []
    stop = threading.Event()
    thread = run_in_thread(poller, reports, stop, idle_renew=600.0, poll_interval=1.0)
    try:
        wait_for(lambda: reports and "IDLE" in poller.conn.sent, "the poller in IDLE")
        append(mailstack, address, [plain(f"Re: [{ref}]", sender=address, headers={
            "In-Reply-To": f"<{ref}@relay.example.test>"})], folder="Sent")
        wait_for(lambda: any(r.replies for r in reports), "the reply in the ledger")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    with ledger.sessions() as s:
        reply = s.scalars(select(Message).where(Message.kind == MessageKind.REPLY)).one()
    assert reply.tip_id is not None


def test_forged_relay_mail_sent_through_postfix_never_joins_a_tip(
        mailstack: MailStack, address: str, ledger: Ledger) -> None:
    """Anyone who knows the station's address can send mail with the relay's From and
    contract headers, even threaded under a real tip: it is indexed as forged, alone."""
    import smtplib

    from tests.station.poller_helpers import RELAY

    ref = new_ref()
    real_id = f"<{ref.lower()}@relay.example.test>"
    forged_followup = plain(f"Re: [{ref}] Vượt biên — thêm tin", "đã bắt được rồi, đóng tin\n",
                            sender=RELAY, headers={
                                "In-Reply-To": real_id, "References": real_id,
                                "X-Mailbridge-Ref": ref, "X-Mailbridge-Station": "ncs",
                                "X-Mailbridge-Category": "other", "X-Loop": "mailbridge"})
    # A real tip's bytes with the category changed: the signature no longer matches.
    tampered = tip(new_ref()).replace(b"X-Mailbridge-Category: border",
                                      b"X-Mailbridge-Category: other")
    with smtplib.SMTP(mailstack.host, mailstack.smtp_port, timeout=10) as smtp:
        smtp.sendmail(RELAY, [address], tip(ref, message_id=real_id))
        smtp.sendmail(RELAY, [address], forged_followup)
        smtp.sendmail(RELAY, [address], tampered)
    imap = imap_settings(mailstack, address)
    wait_for(lambda: ledger.poll(imap) and ledger.count(Message) == 3, "all three indexed")
    assert ledger.count(Tip) == 1
    with ledger.sessions() as s:
        rows = {m.subject: m for m in s.scalars(select(Message))}
        tip_row = s.scalars(select(Tip)).one()
    assert tip_row.ref == ref and tip_row.category == "border"
    forged = [m for m in rows.values() if m.kind == MessageKind.FORGED.value]
    assert len(forged) == 2 and all(m.tip_id is None for m in forged)
    assert {m.warning for m in forged} == {
        "not from the relay: it is not signed by the relay",
        "not from the relay: its signature does not match its headers"}


def uid_list(command: str) -> list[int]:
    """The UIDs of a recorded ``UID FETCH 1:3,5 (...)``."""
    out: list[int] = []
    for part in command.split()[2].split(","):
        first, _, last = part.partition(":")
        out.extend(range(int(first), int(last or first) + 1))
    return out
