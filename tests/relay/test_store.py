"""The relay database, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import fcntl
import functools
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailbridge.config import Station
from mailbridge.core.conversation import Sealer, seal
from mailbridge.core.message import Composed
from mailbridge.core.receipts import new_reply_token
from mailbridge.errors import ConfigError, StoreError
from mailbridge.relay.store import (
    DEAD,
    DELIVERED,
    DROPPED,
    QUEUED,
    SENDING,
    STATION,
    TIPSTER,
    Accepted,
    Conversation,
    Expired,
    RelayStore,
    Said,
    conversations,
    database_url,
    form_tokens,
    messages,
    outbox,
    station_counts,
    tips,
)
from tests.relay.outbox_driver import FakeClock, builder, maildir_station, submit
from tests.waiting import wait_for

LEASE = timedelta(minutes=10)
ROOT = Path(__file__).resolve().parents[2]
NCS = maildir_station("ncs", Path("/nonexistent"))
ABC = maildir_station("abc", Path("/nonexistent"))


# url, clock and store: tests/relay/conftest.py


def raw_message(store: RelayStore, outbox_id: int) -> bytes | None:
    with store.engine.connect() as conn:
        value = conn.execute(select(outbox.c.message).where(outbox.c.id == outbox_id)).scalar()
    return bytes(value) if value is not None else None


def test_refs_are_sequential_per_station(store: RelayStore) -> None:
    refs = [submit(store, st, "x").ref for st in (NCS, ABC, NCS, NCS, ABC)]
    assert refs == ["NCS-0001", "ABC-0001", "NCS-0002", "NCS-0003", "ABC-0002"]
    assert [r.ref for r in store.list_outbox()] == refs


def test_concurrent_accepts_never_share_a_ref(store: RelayStore) -> None:
    refs: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(10):
            ref = submit(store, NCS, "x").ref
            with lock:
                refs.append(ref)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(refs) == [f"NCS-{n:04d}" for n in range(1, 41)]


def test_accept_is_committed_before_it_returns(store: RelayStore, url: str) -> None:
    accepted = submit(store, NCS, "committed tip", receipt_hash="ab" * 32)
    other = RelayStore(url)  # a second engine: sees only committed data
    try:
        rows = other.list_outbox()
        tip = other.tip_by_receipt("ab" * 32)
    finally:
        other.close()
    assert [(r.id, r.ref, r.state) for r in rows] == [(accepted.outbox_id, "NCS-0001", QUEUED)]
    assert tip is not None and tip.ref == "NCS-0001" and tip.station_id == "ncs"
    assert tip.message_id.startswith("<") and tip.message_id.endswith(">")


def test_stored_bytes_are_the_built_message_with_crlf(store: RelayStore) -> None:
    accepted = submit(store, NCS, "Có người lạ mang hàng qua suối")
    data = raw_message(store, accepted.outbox_id)
    assert data is not None and b"\r\nX-Mailbridge-Ref: NCS-0001\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_only_hours_are_kept(store: RelayStore, clock: FakeClock) -> None:
    accepted = submit(store, NCS, "x")
    row = store.list_outbox()[0]
    hour = clock.now.replace(minute=0, second=0, microsecond=0)
    assert row.created_hour == row.updated_hour == hour
    assert row.next_attempt_at == hour  # due at once, yet no finer than the hour
    tip = store.tip_by_token(_token_of(store, accepted.ref))
    assert tip is not None and tip.created_hour == hour


def _token_of(store: RelayStore, ref: str) -> str:
    with store.engine.connect() as conn:
        return str(conn.execute(select(tips.c.reply_token).where(tips.c.ref == ref)).scalar())


def test_delay_puts_the_first_attempt_inside_the_window(store: RelayStore,
                                                         clock: FakeClock) -> None:
    submitted = clock.now
    for _ in range(5):
        submit(store, NCS, "x", delay_minutes=15)
    schedule = {row.id: row.next_attempt_at for row in store.list_outbox()}
    for when in schedule.values():
        assert when is not None and submitted < when <= submitted + timedelta(minutes=15)
    assert store.claim_due(10, LEASE) == []
    clock.advance(minutes=15)
    claims = store.claim_due(10, LEASE)
    assert len(claims) == 5
    for claim in claims:  # the Date header is the scheduled send time, not the submission
        date = message_from_bytes(claim.message, policy=default_policy)["Date"].datetime
        assert date == schedule[claim.id] != submitted


def test_failed_build_stores_nothing_and_keeps_the_number(store: RelayStore) -> None:
    def broken(ref: str, date: datetime) -> Composed:
        raise ValueError("cannot build")

    with pytest.raises(ValueError, match="cannot build"):
        store.accept(NCS, broken, receipt_hash="h" * 64, reply_token="t" * 32)
    assert store.list_outbox() == []
    assert submit(store, NCS, "x", receipt_hash="h" * 64).ref == "NCS-0001"


def test_a_failed_build_gives_back_its_token_and_its_place_in_the_hour(
        store: RelayStore, clock: FakeClock) -> None:
    def broken(ref: str, date: datetime) -> Composed:
        raise ValueError("cannot build")

    token = ("d" * 64, clock.now)
    with pytest.raises(ValueError, match="cannot build"):
        store.accept(NCS, broken, receipt_hash="h" * 64, reply_token="t" * 32, per_hour=1,
                     form_token=token)
    # The tipster may send the same form again, and the hour's one tip is still free.
    reply = new_reply_token()
    accepted = store.accept(NCS, builder(NCS, "x", reply), receipt_hash="h" * 64,
                            reply_token=reply, per_hour=1, form_token=token)
    assert accepted.ref == "NCS-0001"
    assert [r.ref for r in store.list_outbox()] == ["NCS-0001"]


@contextmanager
def another_writer(url: str, store: RelayStore) -> Iterator[Callable[[], str]]:
    """``meanwhile()`` stores a whole tip for NCS from another writer (its own engine, as
    a web worker has), in a thread, and returns its ref; it fails if that writer waited
    20 s, which frees the lock the caller may be holding."""
    other = RelayStore(url, clock=store.clock)
    threads: list[threading.Thread] = []

    def meanwhile() -> str:
        refs: list[str] = []
        thread = threading.Thread(target=lambda: refs.append(submit(other, NCS, "y").ref))
        threads.append(thread)
        thread.start()
        thread.join(timeout=20)
        assert refs, "the other writer waited for this build"
        return refs[0]

    try:
        yield meanwhile
    finally:
        for thread in threads:
            thread.join()
        other.close()


def test_no_lock_is_held_while_a_tip_is_built(url: str, store: RelayStore) -> None:
    """Building the message is most of an accept: another writer stores a whole tip for
    the same station meanwhile. With the build inside the transaction it would wait for
    the database's lock (SQLite) or the station's counter row (PostgreSQL)."""
    refs: list[str] = []
    with another_writer(url, store) as meanwhile:
        def build(ref: str, date: datetime) -> Composed:
            refs.append(meanwhile())
            return builder(NCS, "first", "t" * 32)(ref, date)

        first = store.accept(NCS, build, receipt_hash="h" * 64, reply_token="t" * 32)
    assert (first.ref, refs) == ("NCS-0001", ["NCS-0002"])
    assert sorted(r.ref for r in store.list_outbox()) == ["NCS-0001", "NCS-0002"]


def test_tips_queued_behind_another_writer_share_a_commit_each_refused_alone(
        tmp_path: Path, clock: FakeClock) -> None:
    """While another process writes (its lock on the writer file), a worker's tips queue
    and then go in one transaction: a token used twice in it and a tip past the hour's
    limit are refused alone, and leave no used token and no count behind."""
    database = tmp_path / "relay.db"
    store = RelayStore(f"sqlite:///{database}", clock=clock)
    store.upgrade()
    outcomes: dict[str, object] = {}

    def send(name: str, token: str) -> None:
        reply = new_reply_token()
        try:
            outcomes[name] = store.accept(
                NCS, builder(NCS, name, reply), receipt_hash=name * 64, reply_token=reply,
                per_hour=2, form_token=(token * 64, clock.now)).ref
        except Exception as exc:
            outcomes[name] = type(exc).__name__

    group = store._group
    assert group is not None

    def has_queued(n: int) -> bool:
        return group.queued == n

    threads = []
    with open(f"{database}-writer", "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        for queued, (name, token) in enumerate([("a", "1"), ("b", "2"), ("c", "2"),
                                                 ("d", "3")]):
            threads.append(threading.Thread(target=send, args=(name, token)))
            threads[-1].start()
            # One at a time, so they queue in this order.
            wait_for(functools.partial(has_queued, queued), f"{queued} tips to queue",
                     interval=0.01)
            assert group.queued == queued
    for thread in threads:
        thread.join(timeout=20)
    assert outcomes == {"a": "NCS-0001", "b": "NCS-0002", "c": "FormTokenUsed",
                        "d": "StationFull"}
    with store.engine.connect() as conn:
        assert sorted(conn.execute(select(form_tokens.c.digest)).scalars()) == ["1" * 64,
                                                                                "2" * 64]
        assert conn.execute(select(station_counts.c.count)).scalar_one() == 2
    assert [r.ref for r in store.list_outbox()] == ["NCS-0001", "NCS-0002"]
    store.close()


def test_a_ref_taken_since_a_failed_build_leaves_a_gap_not_a_shared_ref(
        url: str, store: RelayStore) -> None:
    """The failed tip's number cannot be given back once a later tip holds the next."""
    later: list[str] = []
    with another_writer(url, store) as meanwhile:
        def broken(ref: str, date: datetime) -> Composed:
            later.append(meanwhile())
            raise ValueError("cannot build")

        with pytest.raises(ValueError, match="cannot build"):
            store.accept(NCS, broken, receipt_hash="h" * 64, reply_token="t" * 32)
    assert later == ["NCS-0002"]
    assert submit(store, NCS, "x").ref == "NCS-0003"
    assert [r.ref for r in store.list_outbox()] == ["NCS-0002", "NCS-0003"]


# A relay killed while it builds a tip's message, between an accept's two transactions.
KILLED_MID_ACCEPT = """
import os, signal, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from mailbridge.relay.store import RelayStore
from tests.relay.outbox_driver import maildir_station

def build(ref, date):
    os.kill(os.getpid(), signal.SIGKILL)

RelayStore(sys.argv[1]).accept(
    maildir_station("ncs", Path("/nonexistent")), build, receipt_hash="h" * 64,
    reply_token="t" * 32, per_hour=5,
    form_token=("e" * 64, datetime.now(UTC) + timedelta(hours=1)))
"""


def test_a_relay_killed_mid_accept_leaves_no_half_tip(url: str, store: RelayStore) -> None:
    """No outbox row, no tip; what stays taken is its form token (the tipster, who got
    no receipt, sends the form again from a fresh page), one count and a ref gap."""
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_ACCEPT, url], cwd=ROOT,
                            capture_output=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert store.list_outbox() == [] and store.tip_by_receipt("h" * 64) is None
    assert store.use_form_token("e" * 64, datetime.now(UTC)) is False
    with store.engine.connect() as conn:
        assert conn.execute(select(func.sum(station_counts.c.count))).scalar() == 1
    assert submit(store, NCS, "the next tip", receipt_hash="h" * 64).ref == "NCS-0002"


def test_duplicate_receipt_hash_is_a_store_error(store: RelayStore) -> None:
    submit(store, NCS, "x", receipt_hash="c" * 64)
    with pytest.raises(StoreError, match="relay database") as info:
        submit(store, NCS, "secret-words-of-the-tip", receipt_hash="c" * 64)
    # hide_parameters: neither our message nor the chained one quotes the tip
    assert "secret-words" not in str(info.value)
    assert "secret-words" not in str(info.value.__cause__)
    assert [r.ref for r in store.list_outbox()] == ["NCS-0001"]


def test_delivery_purges_the_bytes(store: RelayStore, clock: FakeClock) -> None:
    accepted = submit(store, NCS, "purge me")
    [claim] = store.claim_due(10, LEASE)
    assert b"purge me" in claim.message and claim.attempts == 1
    assert store.mark_delivered(claim)
    assert raw_message(store, accepted.outbox_id) is None
    [row] = store.list_outbox()
    assert (row.state, row.next_attempt_at, row.last_error) == (DELIVERED, None, "")
    assert row.delivered_hour == clock.now.replace(minute=0, second=0, microsecond=0)
    assert store.pending_count() == 0


def test_claims_are_leased_and_fenced(store: RelayStore, clock: FakeClock) -> None:
    submit(store, NCS, "x")
    [first] = store.claim_due(10, LEASE)
    assert store.claim_due(10, LEASE) == []  # leased to the first claimer
    assert store.list_outbox()[0].state == SENDING
    assert store.pending_count() == 1
    clock.advance(minutes=11)  # that claimer died: the lease ran out
    [second] = store.claim_due(10, LEASE)
    assert second.attempts == 2
    assert not store.mark_delivered(first)  # a stale claim changes nothing
    assert store.mark_delivered(second)


def test_recover_interrupted_requeues_sending_rows(store: RelayStore) -> None:
    submit(store, NCS, "x")
    store.claim_due(10, LEASE)
    assert store.recover_interrupted(all_rows=True) == 1
    [again] = store.claim_due(10, LEASE)
    assert again.attempts == 2


def test_failure_then_dead(store: RelayStore, clock: FakeClock) -> None:
    submit(store, NCS, "x")
    [claim] = store.claim_due(10, LEASE)
    assert store.mark_failed(claim, "451 4.3.0 later", clock.now + timedelta(seconds=30)) == QUEUED
    row = store.list_outbox()[0]
    assert (row.state, row.last_error) == (QUEUED, "451 4.3.0 later")
    assert store.next_due() == clock.now + timedelta(seconds=30)
    clock.advance(seconds=30)
    [claim] = store.claim_due(10, LEASE)
    assert store.mark_failed(claim, "550 5.1.1 no such user", None) == DEAD
    assert store.list_outbox([DEAD])[0].last_error == "550 5.1.1 no such user"
    assert store.next_due() is None


def test_retry_and_drop(store: RelayStore, clock: FakeClock) -> None:
    dead_id = submit(store, NCS, "x").outbox_id
    [claim] = store.claim_due(10, LEASE)
    store.mark_failed(claim, "554 no", None)
    clock.advance(days=9)
    row = store.retry(dead_id)
    assert (row.state, row.next_attempt_at, row.last_error) == (QUEUED, clock.now, "554 no")
    assert [c.id for c in store.claim_due(10, LEASE)] == [dead_id]

    queued_id = submit(store, ABC, "drop me").outbox_id
    row = store.drop(queued_id)
    assert row.state == DROPPED and row.next_attempt_at is None
    assert raw_message(store, queued_id) is None
    for action in (store.retry, store.drop):
        with pytest.raises(StoreError, match=rf"outbox row {queued_id} \(ABC-0001\) is already "
                                             r"dropped"):
            action(queued_id)


def test_retry_and_drop_refuse_what_they_cannot_change(store: RelayStore,
                                                       clock: FakeClock) -> None:
    with pytest.raises(StoreError, match="outbox row 99 does not exist"):
        store.retry(99)
    with pytest.raises(StoreError, match="outbox row 99 does not exist"):
        store.drop(99)
    sending_id = submit(store, NCS, "x").outbox_id
    [claim] = store.claim_due(10, LEASE)
    with pytest.raises(StoreError, match="is being sent right now"):
        store.drop(sending_id)
    store.mark_delivered(claim)
    with pytest.raises(StoreError, match=rf"outbox row {sending_id} \(NCS-0001\) is already "
                                         r"delivered"):
        store.retry(sending_id)
    assert store.list_outbox()[0].state == DELIVERED


def test_upgrade_is_idempotent(store: RelayStore) -> None:
    store.upgrade()
    assert submit(store, NCS, "x").ref == "NCS-0001"


@pytest.mark.parametrize("given", ["postgresql://u@127.0.0.1/db", "postgres://u@127.0.0.1/db",
                                   "postgresql+psycopg://u@127.0.0.1/db"])
def test_plain_postgresql_urls_mean_psycopg(given: str) -> None:
    assert database_url(given).drivername == "postgresql+psycopg"


def test_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="relay.database"):
        RelayStore("mysql://user:pw@localhost/db")


def test_store_error_names_the_fix(tmp_path: Path) -> None:
    store = RelayStore(f"sqlite:///{tmp_path / 'empty.db'}")  # never upgraded
    try:
        with pytest.raises(StoreError, match="run `mailbridge db upgrade`"):
            store.list_outbox()
    finally:
        store.close()


def test_sqlite_file_and_wal_hold_no_trace_after_delivery(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    store = RelayStore(f"sqlite:///{path}")
    store.upgrade()
    marker = "zebra-crossing-7781 near the old mill"
    big = marker + " " + "padding words " * 800  # spills into overflow pages too

    def files() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())

    try:
        submit(store, NCS, marker)
        submit(store, NCS, big)
        assert files().count(marker.encode()) >= 2  # the check below can fail
        claims = store.claim_due(10, LEASE)
        for claim in claims:
            assert store.mark_delivered(claim)
        store.purge_freed()
        assert marker.encode() not in files()
        assert b"padding words" not in files()
        assert b"zebra" not in files()
    finally:
        store.close()
    reopened = RelayStore(f"sqlite:///{path}")
    try:
        assert {r.state for r in reopened.list_outbox()} == {DELIVERED}
    finally:
        reopened.close()


def test_a_used_form_token_stays_used_across_a_restart(url: str, clock: FakeClock) -> None:
    valid_until = clock.now + timedelta(hours=2)
    first = RelayStore(url, clock=clock)
    first.upgrade()
    try:
        assert first.use_form_token("a" * 64, valid_until) is True
        assert first.use_form_token("a" * 64, valid_until) is False
    finally:
        first.close()
    restarted = RelayStore(url, clock=clock)
    try:
        assert restarted.use_form_token("a" * 64, valid_until) is False
        assert restarted.use_form_token("b" * 64, valid_until) is True
    finally:
        restarted.close()


def test_used_form_tokens_are_kept_to_the_hour_and_purged_after(
        store: RelayStore, clock: FakeClock) -> None:
    valid_until = clock.now + timedelta(hours=2)
    store.use_form_token("a" * 64, valid_until)
    with store.engine.connect() as conn:
        [(digest, expires)] = conn.execute(select(form_tokens)).all()
    assert digest == "a" * 64
    assert expires.minute == expires.second == expires.microsecond == 0  # nothing finer
    assert expires.replace(tzinfo=UTC) > valid_until
    clock.now = expires.replace(tzinfo=UTC) - timedelta(seconds=1)
    assert store.use_form_token("a" * 64, valid_until) is False  # still kept
    clock.now = expires.replace(tzinfo=UTC)
    store.use_form_token("b" * 64, clock.now + timedelta(hours=2))
    with store.engine.connect() as conn:
        assert [r.digest for r in conn.execute(select(form_tokens))] == ["b" * 64]


def test_a_reader_elsewhere_never_holds_up_an_accept(tmp_path: Path) -> None:
    """A backup or a `sqlite3` shell in a read transaction: the purge's checkpoint
    must not take the write lock (a TRUNCATE held it while it waited, stalling accepts)."""
    path = tmp_path / "relay.db"
    store = RelayStore(f"sqlite:///{path}")
    store.upgrade()
    reader = sqlite3.connect(path, isolation_level=None)
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)  # never waits for a lock
    try:
        submit(store, NCS, "delivered before the reader came")
        for claim in store.claim_due(10, LEASE):
            store.mark_delivered(claim)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM relay_outbox").fetchone() == (1,)
        submit(store, NCS, "accepted while the reader reads")  # past the reader's snapshot
        purged: list[bool] = []
        purge = threading.Thread(target=lambda: purged.append(store.purge_freed()))
        purge.start()
        write_lock_taken = 0
        while purge.is_alive():  # a writer elsewhere, trying for the lock all along
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
            except sqlite3.OperationalError:
                write_lock_taken += 1
        purge.join()
        accepted = [submit(store, NCS, f"tip {i}").ref for i in range(3)]
        assert write_lock_taken == 0
        assert purged == [False]  # the reader still needs the WAL: tried again later
        assert accepted == ["NCS-0003", "NCS-0004", "NCS-0005"]
        reader.execute("COMMIT")
        assert store.purge_freed() is True
        assert path.with_name("relay.db-wal").stat().st_size == 0
    finally:
        reader.close()
        probe.close()
        store.close()


@pytest.mark.parametrize("url", ["postgresql://u:hunter2@host:notaport/db", "u:hunter2@x",
                                 "nonsense://u:hunter2@host/db"])
def test_a_bad_database_url_is_a_config_line_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError, match="relay.database") as err:
        RelayStore(url)
    assert "hunter2" not in str(err.value)


# -- conversations -------------------------------------------------------------------

SEALER = Sealer(b"k" * 32)
CODE = secrets.token_bytes(32)  # a receipt code's seal_key (ReceiptHasher.derive)


def converse(store: RelayStore, station: Station = NCS, code: bytes = CODE,
             text: str = "x") -> tuple[str, str]:
    """Accept a tip with a conversation; returns its receipt hash and reply token."""
    token, receipt = new_reply_token(), secrets.token_hex(32)
    store.accept(station, builder(station, text, token), receipt_hash=receipt,
                 reply_token=token, keys=SEALER.new_keys(code), category_id="drugs")
    return receipt, token


def followup(store: RelayStore, conversation: Conversation, text: str) -> Accepted:
    station = NCS if conversation.tip.station_id == "ncs" else ABC

    def build(date: datetime) -> Composed:
        return builder(station, text, conversation.reply_token)(conversation.tip.ref, date)

    return store.add_followup(conversation, build, seal(conversation.public_key, text))


def test_a_conversation_opens_with_its_code_only(store: RelayStore) -> None:
    receipt, _ = converse(store)
    opened = store.open_conversation(receipt, CODE, SEALER)
    assert opened is not None
    assert (opened.tip.ref, opened.category_id, opened.delivered, opened.said) == \
        ("NCS-0001", "drugs", False, ())
    assert store.open_conversation(receipt, secrets.token_bytes(32), SEALER) is None
    assert store.open_conversation(secrets.token_hex(32), CODE, SEALER) is None


def test_replies_are_sealed_and_read_back_in_order_with_their_day(
        store: RelayStore, clock: FakeClock) -> None:
    receipt, token = converse(store)
    assert store.add_reply(token, "Cảm ơn, chúng tôi đã nhận.", station_id="ncs")
    clock.advance(days=2)
    assert store.add_reply(token, "Hãy cho biết thêm.", station_id="ncs")
    with store.engine.connect() as conn:
        stored = conn.execute(select(messages.c.sealed)).scalars().all()
    assert all("Cảm ơn".encode() not in bytes(s) for s in stored)
    opened = store.open_conversation(receipt, CODE, SEALER)
    assert opened is not None
    assert opened.said == (Said(STATION, date(2026, 3, 14), "Cảm ơn, chúng tôi đã nhận."),
                           Said(STATION, date(2026, 3, 16), "Hãy cho biết thêm."))


def test_add_reply_refuses_unknown_tokens_other_stations_and_keyless_tips(
        store: RelayStore) -> None:
    _, token = converse(store)
    keyless = new_reply_token()  # a tip accepted without a keypair (older, or by e-mail)
    store.accept(NCS, builder(NCS, "no keys", keyless), receipt_hash=secrets.token_hex(32),
                 reply_token=keyless)
    assert not store.add_reply(new_reply_token(), "x", station_id="ncs")
    assert not store.add_reply(token, "x", station_id="abc")
    assert not store.add_reply(keyless, "x", station_id="ncs")
    with store.engine.connect() as conn:
        assert conn.execute(select(messages.c.id)).first() is None
    assert store.add_reply(token, "x", station_id="ncs")  # the check above can fail


def test_delivered_shows_once_the_tip_is_delivered(store: RelayStore) -> None:
    receipt, _ = converse(store)
    (claim,) = store.claim_due(10, LEASE)
    assert store.mark_delivered(claim)
    opened = store.open_conversation(receipt, CODE, SEALER)
    assert opened is not None and opened.delivered


def test_a_followup_is_queued_under_its_own_row_and_kept_sealed(store: RelayStore) -> None:
    receipt, _ = converse(store)
    opened = store.open_conversation(receipt, CODE, SEALER)
    assert opened is not None
    assert followup(store, opened, "the truck is blue").ref == "NCS-0001+1"
    assert followup(store, opened, "and has two men").ref == "NCS-0001+2"
    claims = store.claim_due(10, LEASE)
    assert [c.ref for c in claims] == ["NCS-0001", "NCS-0001+1", "NCS-0001+2"]
    message = message_from_bytes(claims[1].message, policy=default_policy)
    assert message["X-Mailbridge-Ref"] == "NCS-0001"
    reopened = store.open_conversation(receipt, CODE, SEALER)
    assert reopened is not None
    assert [(s.author, s.text) for s in reopened.said] == [
        (TIPSTER, "the truck is blue"), (TIPSTER, "and has two men")]


def test_old_outbox_rows_expire_but_dead_ones_stay(url: str, clock: FakeClock) -> None:
    store = RelayStore(url, clock=clock, conversation_days=30, outbox_days=60)
    store.upgrade()
    try:
        delivered, dead, dropped = (submit(store, NCS, t) for t in ("a", "b", "c"))
        for claim in store.claim_due(10, LEASE):
            if claim.id == delivered.outbox_id:
                store.mark_delivered(claim)
            else:
                store.mark_failed(claim, "550 no", None)
        store.drop(dropped.outbox_id)
        clock.advance(days=59, hours=23)
        assert store.purge_expired() == Expired(conversations=3, outbox_rows=0)
        clock.advance(hours=1)
        assert store.purge_expired(dry_run=True) == Expired(conversations=0, outbox_rows=2)
        assert len(store.list_outbox()) == 3  # a dry run deletes nothing
        assert store.purge_expired() == Expired(conversations=0, outbox_rows=2)
        assert [(r.ref, r.state) for r in store.list_outbox()] == [("NCS-0002", DEAD)]
        assert store.dead_count() == 1
    finally:
        store.close()


def test_conversations_expire_and_are_deleted(url: str, clock: FakeClock) -> None:
    store = RelayStore(url, clock=clock, conversation_days=90)
    store.upgrade()
    try:
        receipt, token = converse(store)
        assert store.add_reply(token, "x", station_id="ncs")
        clock.advance(days=89, hours=23)
        assert store.purge_expired().conversations == 0
        assert store.open_conversation(receipt, CODE, SEALER) is not None
        clock.advance(hours=1)
        assert not store.add_reply(token, "x", station_id="ncs")
        assert store.open_conversation(receipt, CODE, SEALER) is None
        assert store.purge_expired().conversations == 1
        with store.engine.connect() as conn:
            for table in (tips, conversations, messages):
                assert conn.execute(select(table)).first() is None
    finally:
        store.close()
