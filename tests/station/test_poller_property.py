"""Property: any interleaving of deliveries, flag changes, moves, deletes and poller restarts
leaves the same ledger (its live view) as one clean full index of the final mailbox plus
the mail a poll saw there before it was deleted.

The ledger keeps every message it indexed (a deleted one as a tombstone, its tip with it),
so later mail still threads to a deleted tip: a reply to it is a reply. A clean index of
the final mailbox alone has never seen that tip, so it indexes that mail too, from a folder
emptied before its last poll.
"""

from __future__ import annotations

import itertools
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from mailbridge.station.ledger.models import Location, Message, Tip
from mailbridge.station.poller.sync import ImapPoller
from tests.servers.mailstack import MailStack
from tests.station.poller_helpers import (
    PASSWORD,
    Ledger,
    append,
    imap_settings,
    new_ref,
    plain,
    tip,
)

pytestmark = pytest.mark.servers
FOLDERS = ("INBOX", "Archive")
GONE = "Gone"  # the clean index's copy of the mail deleted after a poll saw it
_runs = itertools.count()

operations = st.lists(st.one_of(
    st.tuples(st.just("deliver"), st.sampled_from(["tip", "followup", "other", "reply"])),
    st.tuples(st.just("flag"), st.integers(0, 30),
              st.sampled_from(["\\Seen", "\\Flagged", "Verified"])),
    st.tuples(st.just("move"), st.integers(0, 30)),
    st.tuples(st.just("delete"), st.integers(0, 30)),
    st.tuples(st.just("poll")),
    st.tuples(st.just("restart")),
), min_size=3, max_size=14)


def live_view(ledger: Ledger) -> list[tuple[Any, ...]]:
    """What officers see: each live copy with its flags, kind and thread (by public ref)."""
    with ledger.sessions() as s:
        refs = {t.id: (t.ref, t.category, t.placement) for t in s.scalars(select(Tip))}
        rows = []
        for loc in s.scalars(select(Location).where(Location.gone.is_(False))):
            msg = s.get(Message, loc.message_pk)
            assert msg is not None
            rows.append((loc.folder, loc.uid, msg.message_id, loc.flags, msg.kind,
                         refs.get(msg.tip_id or 0)))
    return sorted(rows, key=repr)


def message_id(raw: bytes) -> str:
    return str(BytesHeaderParser().parsebytes(raw)["Message-ID"]).strip()


class Mailbox:
    """The officer's side: delivers and rearranges mail with a normal IMAP client."""

    def __init__(self, stack: MailStack, address: str) -> None:
        self.stack, self.address = stack, address
        self.tips: list[str] = []
        self.raw: dict[str, bytes] = {}    # every message delivered, by Message-ID
        self.unpolled: set[str] = set()    # delivered since the last poll
        self.gone_after_a_poll: list[bytes] = []  # deleted when a poll had seen them

    def deliver(self, what: str) -> None:
        if what in ("followup", "reply") and not self.tips:
            what = "tip"
        if what == "tip":
            ref = new_ref()
            self.tips.append(ref)
            raw = tip(ref, message_id=f"<{ref}@relay.example.test>")
        elif what == "followup":
            ref = self.tips[-1]
            raw = tip(ref, "thêm", references=(f"<{ref}@relay.example.test>",))
        elif what == "reply":
            raw = plain("Re: tip", sender=self.address,
                        headers={"In-Reply-To": f"<{self.tips[0]}@relay.example.test>"})
        else:
            raw = plain("hello")
        mid = message_id(raw)
        self.raw[mid] = raw
        self.unpolled.add(mid)
        append(self.stack, self.address, [raw])

    def polled(self) -> None:
        self.unpolled.clear()

    def act(self, op: str, n: int, flag: str = "") -> None:
        with self.stack.imap_client(self.address, PASSWORD) as c:
            everything = [(f, u) for f in FOLDERS for u in c.select_folder(f) and c.search("ALL")]
            if not everything:
                return
            folder, uid = everything[n % len(everything)]
            c.select_folder(folder)
            if op == "flag":
                c.add_flags([uid], [flag.encode()])
            elif op == "move":
                c.move([uid], FOLDERS[1] if folder == FOLDERS[0] else FOLDERS[0])
            else:
                head = c.fetch([uid], ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])[uid]
                deleted = message_id(head[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"])
                if deleted not in self.unpolled:
                    self.gone_after_a_poll.append(self.raw[deleted])
                c.delete_messages([uid])
                c.expunge()


@pytest.fixture(scope="module")
def shared_address(mailstack: MailStack) -> str:
    from tests.station.poller_helpers import new_user

    address = new_user(mailstack)
    append(mailstack, address, [], folder="Archive")
    return address


# An example takes about a second, so a failure's shrinking outlasts the default 300 s
# timeout, which then buried the smallest case under a "flaky" one; print_blob prints the
# line that replays it.
@pytest.mark.timeout(1200)
@settings(max_examples=12, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations)
@example(ops=[("deliver", "tip"), ("poll",), ("flag", 0, "\\Flagged"), ("restart",)])
@example(ops=[("deliver", "tip"), ("deliver", "followup"), ("poll",), ("move", 0),
              ("deliver", "reply"), ("poll",), ("delete", 1)])
@example(ops=[("deliver", "tip"), ("deliver", "followup"), ("move", 0), ("poll",),
              ("flag", 1, "Verified"), ("move", 1)])
@example(ops=[("deliver", "tip"), ("poll",), ("deliver", "reply"), ("delete", 0)])
def test_any_interleaving_equals_a_clean_full_index(
        mailstack: MailStack, shared_address: str, tmp_path: Path,
        ops: list[tuple[Any, ...]]) -> None:
    address = shared_address
    mailstack.expunge_all(address)
    run = tmp_path / f"run{next(_runs)}"
    imap = imap_settings(mailstack, address, folders=FOLDERS)
    incremental = Ledger(f"sqlite:///{run}/inc.db", run / "att", address)
    box = Mailbox(mailstack, address)
    poller: ImapPoller = incremental.poller(imap)
    try:
        for op in ops:
            if op[0] == "deliver":
                box.deliver(op[1])
            elif op[0] in ("flag", "move", "delete"):
                box.act(op[0], *op[1:])
            elif op[0] == "poll":
                box.polled()
                poller.poll()
            else:
                poller.conn.close()
                poller = incremental.poller(imap)
        poller.poll()
    finally:
        poller.conn.close()
    clean = Ledger(f"sqlite:///{run}/clean.db", run / "att", address)
    if box.gone_after_a_poll:  # the incremental ledger remembers them: so must this one
        append(mailstack, address, box.gone_after_a_poll, folder=GONE)
        with_gone = imap_settings(mailstack, address, folders=(*FOLDERS, GONE))
        clean.poll(with_gone)
        mailstack.doveadm("expunge", "-u", address, "mailbox", GONE, "all")
        clean.poll(with_gone)
    else:
        clean.poll(imap)
    try:
        assert live_view(incremental) == live_view(clean)
    finally:
        incremental.close()
        clean.close()
