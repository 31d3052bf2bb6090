"""Delivery against a real SMTP server we control (aiosmtpd on 127.0.0.1) and into Maildirs."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from mailbridge.config import Station
from mailbridge.relay.outbox import (
    Backoff,
    DeliveryWorker,
    deliver_maildir,
    maildir_name,
    server_code,
)
from mailbridge.relay.store import DEAD, DELIVERED, DROPPED, QUEUED, RelayStore
from tests.relay.outbox_driver import (
    RELAY_ADDRESS,
    FakeClock,
    maildir_station,
    make_settings,
    refs_in_maildir,
    smtp_station,
    submit,
)
from tests.relay.test_store import converse
from tests.servers.mailstack import free_ports
from tests.waiting import wait_for as wait_sync

NO_JITTER = Backoff(jitter=0.0)


class Sink:
    """An SMTP server's DATA handler: answers with queued replies, then accepts."""

    def __init__(self) -> None:
        self.replies: list[str] = []
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.replies:
            return self.replies.pop(0)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 OK"


@pytest.fixture
def port() -> int:
    return free_ports(1)[0]


@pytest.fixture
def sink() -> Sink:
    return Sink()


def start_server(sink: Sink, port: int) -> Controller:
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


@pytest.fixture
def server(sink: Sink, port: int) -> Iterator[Controller]:
    controller = start_server(sink, port)
    yield controller
    controller.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[RelayStore]:
    s = RelayStore(f"sqlite:///{tmp_path / 'relay.db'}", clock=clock)
    s.upgrade()
    yield s
    s.close()


def worker_for(store: RelayStore, *stations: Station, retry_days: int = 5,
               backoff: Backoff = NO_JITTER) -> DeliveryWorker:
    settings = make_settings(str(store.url), *stations, retry_days=retry_days)
    return DeliveryWorker(settings, store, backoff=backoff, rng=random.Random(7))


def deliver(worker: DeliveryWorker) -> int:
    return asyncio.run(worker.deliver_due())


def test_backoff_doubles_and_is_capped() -> None:
    rng = random.Random(1)
    assert [NO_JITTER.delay(n, rng).total_seconds() for n in (1, 2, 3, 7, 8, 30)] == [
        30, 60, 120, 1920, 3600, 3600]
    jittered = [Backoff(jitter=0.2).delay(1, rng).total_seconds() for _ in range(200)]
    assert all(24 <= s <= 36 for s in jittered) and len(set(jittered)) > 100


@pytest.mark.parametrize(("error", "code"), [
    ("451 4.3.0 later", "451"), ("550 no", "550"), ("127.0.0.1:25: refused", "-"), ("", "-")])
def test_server_code(error: str, code: str) -> None:
    assert server_code(error) == code


def test_delivers_to_the_station_mailbox(store: RelayStore, sink: Sink, port: int,
                                         server: Controller) -> None:
    station = smtp_station("ncs", port)
    accepted = submit(store, station, "Hàng lậu qua cửa khẩu")
    assert deliver(worker_for(store, station)) == 1
    [(sender, rcpts, content)] = sink.received
    assert (sender, rcpts) == (RELAY_ADDRESS, [station.mailbox])
    msg = message_from_bytes(content, policy=default_policy)
    assert msg["X-Mailbridge-Ref"] == accepted.ref
    body = msg.get_body(("plain",))
    assert body is not None and "Hàng lậu qua cửa khẩu" in body.get_content()
    [row] = store.list_outbox()
    assert (row.state, row.attempts, row.next_attempt_at) == (DELIVERED, 1, None)


def test_server_down_then_up(store: RelayStore, sink: Sink, port: int, clock: FakeClock) -> None:
    station = smtp_station("ncs", port)
    submit(store, station, "x")
    worker = worker_for(store, station)
    assert deliver(worker) == 0
    [row] = store.list_outbox()
    assert (row.state, row.attempts) == (QUEUED, 1)
    assert f"127.0.0.1:{port}" in row.last_error
    assert row.next_attempt_at == clock.now + timedelta(seconds=30)
    controller = start_server(sink, port)
    try:
        assert deliver(worker) == 0  # not due yet: no attempt at all
        assert store.list_outbox()[0].attempts == 1
        clock.advance(seconds=30)
        assert deliver(worker) == 1
    finally:
        controller.stop()
    assert len(sink.received) == 1
    assert store.list_outbox()[0].state == DELIVERED


def test_temporary_reply_then_accepted(store: RelayStore, sink: Sink, port: int,
                                       server: Controller, clock: FakeClock) -> None:
    station = smtp_station("ncs", port)
    submit(store, station, "x")
    sink.replies = ["451 4.3.0 Mailbox busy, try later", "452 4.3.1 Insufficient storage"]
    worker = worker_for(store, station)
    assert deliver(worker) == 0
    assert store.list_outbox()[0].last_error == "451 4.3.0 Mailbox busy, try later"
    clock.advance(seconds=30)
    assert deliver(worker) == 0
    row = store.list_outbox()[0]
    assert (row.state, row.last_error) == (QUEUED, "452 4.3.1 Insufficient storage")
    assert row.next_attempt_at == clock.now + timedelta(seconds=60)  # doubled
    clock.advance(seconds=60)
    assert deliver(worker) == 1
    assert len(sink.received) == 1 and store.list_outbox()[0].attempts == 3


def test_permanent_reply_is_dead_then_admin_retries(store: RelayStore, sink: Sink, port: int,
                                                    server: Controller) -> None:
    station = smtp_station("ncs", port)
    accepted = submit(store, station, "x")
    sink.replies = ["554 5.7.1 Rejected by local policy"]
    worker = worker_for(store, station)
    assert deliver(worker) == 0
    [dead] = store.list_outbox([DEAD])
    assert (dead.ref, dead.last_error) == (accepted.ref, "554 5.7.1 Rejected by local policy")
    assert store.pending_count() == 0 and deliver(worker) == 0
    assert sink.received == []
    # the admin fixes the station's server, then retries the row
    assert store.retry(accepted.outbox_id).state == QUEUED
    assert deliver(worker) == 1
    assert [r.state for r in store.list_outbox()] == [DELIVERED]
    assert len(sink.received) == 1


def test_gives_up_after_retry_days(store: RelayStore, port: int, clock: FakeClock) -> None:
    station = smtp_station("ncs", port)  # nothing listens there
    submit(store, station, "x")
    worker = worker_for(store, station, retry_days=1,
                        backoff=Backoff(base=6 * 3600, cap=6 * 3600, jitter=0))
    for _ in range(3):
        deliver(worker)
        assert store.list_outbox()[0].state == QUEUED
        clock.advance(hours=6)
    deliver(worker)
    [row] = store.list_outbox()
    assert row.state == DEAD and row.attempts == 4
    assert row.last_error.startswith("gave up after 4 attempts in 1 days; last: 127.0.0.1:")


def test_unknown_station_is_deferred_with_the_fix(store: RelayStore, tmp_path: Path) -> None:
    submit(store, maildir_station("gone", tmp_path / "gone"), "x")
    worker = worker_for(store, maildir_station("ncs", tmp_path / "ncs"))
    assert deliver(worker) == 0
    row = store.list_outbox()[0]
    assert row.state == QUEUED
    assert "mailbridge outbox drop 1" in row.last_error
    assert store.drop(row.id).state == DROPPED


def test_run_recovers_interrupted_rows_and_wakes_on_accept(tmp_path: Path, sink: Sink,
                                                           port: int,
                                                           server: Controller) -> None:
    store = RelayStore(f"sqlite:///{tmp_path / 'relay.db'}")  # real clock
    store.upgrade()
    station = smtp_station("ncs", port)
    first = submit(store, station, "interrupted")
    store.claim_due(10, timedelta(hours=1))  # a crash left it "sending"
    worker = DeliveryWorker(make_settings(str(store.url), station), store, max_idle=30)
    second: list[str] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await wait_for(lambda: len(sink.received) == 1)
        # the worker now idles up to max_idle; wake() must start a pass at once
        second.append((await asyncio.to_thread(submit, store, station, "new")).ref)
        worker.wake()
        await wait_for(lambda: len(sink.received) == 2)
        stop.set()
        await asyncio.wait_for(task, 10)

    try:
        asyncio.run(scenario())
        refs = [message_from_bytes(c, policy=default_policy)["X-Mailbridge-Ref"]
                for _, _, c in sink.received]
        assert refs == [first.ref, *second]
        assert {r.state for r in store.list_outbox()} == {DELIVERED}
    finally:
        store.close()


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_wake_from_another_thread_starts_a_pass(tmp_path: Path) -> None:
    """The web form calls wake() from its threads: the idle worker must deliver at once,
    not after max_idle (an hour here, far beyond the wait below)."""
    store = RelayStore(f"sqlite:///{tmp_path / 'relay.db'}")  # real clock
    store.upgrade()
    maildir = tmp_path / "ncs"
    station = maildir_station("ncs", maildir)
    worker = DeliveryWorker(make_settings(str(store.url), station), store, max_idle=3600)
    loop, stop = asyncio.new_event_loop(), asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(worker.run(stop),))
    try:
        first = submit(store, station, "before the worker started")
        thread.start()
        wait_sync(lambda: refs_in_maildir(maildir) == [first.ref], "the first pass")
        # The first pass has claimed; the worker goes idle for max_idle unless woken.
        second = submit(store, station, "while the worker idles")
        worker.wake()  # from this thread, not the worker's
        wait_sync(lambda: len(refs_in_maildir(maildir)) == 2, "a pass started by wake()", 10)
        assert sorted(refs_in_maildir(maildir)) == [first.ref, second.ref]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
        store.close()


def test_maildir_delivery(store: RelayStore, tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    station = maildir_station("ncs", root)
    refs = [submit(store, station, f"tip {i}").ref for i in range(3)]
    assert deliver(worker_for(store, station)) == 3
    assert sorted(refs_in_maildir(root)) == refs
    assert list((root / "tmp").iterdir()) == []
    files = sorted((root / "new").iterdir())
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    assert all(b"\r\n" not in f.read_bytes() for f in files)
    assert {r.state for r in store.list_outbox()} == {DELIVERED}


def test_a_pass_records_its_deliveries_in_one_transaction(store: RelayStore,
                                                          tmp_path: Path) -> None:
    good = maildir_station("ncs", tmp_path / "Maildir")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    bad = maildir_station("abc", blocker / "Maildir")
    refs = [submit(store, good, f"tip {i}").ref for i in range(3)]
    submit(store, bad, "x")
    commits: list[int] = []
    sa.event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    assert deliver(worker_for(store, good, bad)) == 3
    assert len(commits) == 3  # the claim, the failed row, the three deliveries together
    assert sorted(refs_in_maildir(tmp_path / "Maildir")) == refs
    assert sorted(r.state for r in store.list_outbox()) == [DELIVERED] * 3 + [QUEUED]
    # A stale claim (its lease taken over by another relay) is not marked.
    submit(store, good, "tip 4")
    [claim] = store.claim_due(10, timedelta(hours=1))
    assert store.mark_delivered(claim, dataclasses.replace(claim, attempts=0)) == 1


def test_maildir_redelivery_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    data = b"Subject: x\r\nX-Mailbridge-Ref: NCS-0001\r\n\r\nbody\r\n"
    first = deliver_maildir(root, 1, data)
    assert first == root / "new" / maildir_name(1, data)
    assert deliver_maildir(root, 1, data) == first
    # a mail client read it: moved to cur/ with flags
    seen = root / "cur" / (first.name + ":2,S")
    first.rename(seen)
    assert deliver_maildir(root, 1, data) == seen
    assert refs_in_maildir(root) == ["NCS-0001"]
    # another row (or the same id after a database reset) is a different file
    deliver_maildir(root, 1, data.replace(b"body", b"other"))
    deliver_maildir(root, 2, data)
    assert len(refs_in_maildir(root)) == 3


def test_crash_after_maildir_write_delivers_once(store: RelayStore, tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    station = maildir_station("ncs", root)
    accepted = submit(store, station, "x")
    [claim] = store.claim_due(10, timedelta(hours=1))
    deliver_maildir(root, claim.id, claim.message)  # written, then the relay died
    assert store.recover_interrupted() == 1
    assert deliver(worker_for(store, station)) == 1
    assert refs_in_maildir(root) == [accepted.ref]


def test_unwritable_maildir_is_deferred(store: RelayStore, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    station = maildir_station("ncs", blocker / "Maildir")
    submit(store, station, "x")
    assert deliver(worker_for(store, station)) == 0
    row = store.list_outbox()[0]
    assert row.state == QUEUED
    assert row.last_error.startswith(f"cannot write into maildir {blocker / 'Maildir'}")


def test_logs_carry_code_but_no_content_and_ref_only_at_debug(
        store: RelayStore, sink: Sink, port: int, server: Controller, clock: FakeClock,
        caplog: pytest.LogCaptureFixture) -> None:
    station = smtp_station("ncs", port)
    submit(store, station, "the blue truck at kilometre 42")
    sink.replies = ["451 4.3.0 busy for ncs@station.example.test"]
    worker = worker_for(store, station)
    with caplog.at_level("DEBUG"):
        deliver(worker)
        clock.advance(seconds=30)
        deliver(worker)
    # the sink's own "mail.log" is the station's server here, not ours
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("mailbridge")]
    assert "outbox: deferred station=ncs attempt=1 code=451" in lines
    assert "outbox: delivered station=ncs attempt=2 code=250" in lines
    # The ref only at DEBUG: with the journal's timestamp it would pin the minute.
    info = [r.getMessage() for r in caplog.records
            if r.name.startswith("mailbridge") and r.levelname != "DEBUG"]
    assert info and not any("NCS-0001" in line for line in info)
    text = "\n".join(lines)
    for secret in ("blue truck", "@station.example.test", RELAY_ADDRESS, "busy"):
        assert secret not in text


@pytest.mark.postgres
def test_two_relays_share_one_postgres_outbox(postgres_url: str, tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    station = maildir_station("ncs", root)
    stores = [RelayStore(postgres_url) for _ in range(2)]
    try:
        stores[0].upgrade()
        refs = [submit(stores[0], station, f"tip {i}").ref for i in range(60)]
        workers = [DeliveryWorker(make_settings(postgres_url, station), s, batch=5)
                   for s in stores]

        async def both() -> list[int]:
            async def drain(worker: DeliveryWorker) -> int:
                total = 0
                while n := await worker.deliver_due():
                    total += n
                return total
            return list(await asyncio.gather(*(drain(w) for w in workers)))

        counts = asyncio.run(both())
        assert sum(counts) == 60 and all(counts)  # both took part, none twice
        assert sorted(refs_in_maildir(root)) == refs
        assert {r.state for r in stores[1].list_outbox()} == {DELIVERED}
    finally:
        for s in stores:
            s.close()


def test_the_worker_deletes_conversations_when_they_expire(
        store: RelayStore, clock: FakeClock, tmp_path: Path) -> None:
    """Expiry moves by whole hours (tips keep only their hour): one look an hour is exact."""
    worker = worker_for(store, maildir_station("ncs", tmp_path / "ncs"))
    converse(store)
    clock.advance(days=store.conversation_days, hours=-1)
    converse(store)
    assert asyncio.run(worker.purge_expired()) == 0
    clock.advance(hours=1)
    assert asyncio.run(worker.purge_expired()) == 1  # the first; the second is younger
    assert len(store.list_outbox()) == 2  # the outbox rows (no text once sent) stay
