"""relay.station_tips_per_hour counted in the relay database, so it is exact across web
workers and relays sharing one database (SQLite and PostgreSQL): station ids and hourly
counts only, earlier hours deleted, and an older database upgraded to hold them."""

from __future__ import annotations

import secrets
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, select

from mailbridge.config import Station
from mailbridge.core.receipts import new_reply_token
from mailbridge.errors import StationFull
from mailbridge.relay.ratelimit import seconds_to_next_hour
from mailbridge.relay.store import MIGRATIONS, RelayStore, form_tokens, station_counts
from tests.relay.outbox_driver import FakeClock, builder, maildir_station, submit

NCS = maildir_station("ncs", Path("/nonexistent"))
ABC = maildir_station("abc", Path("/nonexistent"))

# url, clock and store: tests/relay/conftest.py


def form_tip(store: RelayStore, station: Station = NCS, per_hour: int = 3,
             form_token: tuple[str, datetime] | None = None) -> str:
    """Accept a form tip counted against *per_hour*; its ref."""
    token = new_reply_token()
    return store.accept(station, builder(station, "Xe lạ ở bản.", token),
                        receipt_hash=secrets.token_hex(32), reply_token=token,
                        per_hour=per_hour, form_token=form_token).ref


def counted(store: RelayStore) -> list[tuple[str, int]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(station_counts.c.station_id, station_counts.c.count))
        return sorted((str(station), int(count)) for station, count in rows)


def test_past_the_limit_nothing_is_stored_and_no_ref_is_used(store: RelayStore) -> None:
    assert [form_tip(store) for _ in range(3)] == ["NCS-0001", "NCS-0002", "NCS-0003"]
    with pytest.raises(StationFull, match="relay.station_tips_per_hour"):
        form_tip(store)
    assert len(store.list_outbox()) == 3
    assert form_tip(store, ABC) == "ABC-0001"  # another station keeps its own hour
    assert counted(store) == [("abc", 1), ("ncs", 3)]
    assert submit(store, NCS, "by mail or SMS: not a form tip").ref == "NCS-0004"


def test_a_new_hour_starts_afresh_and_the_last_is_deleted(store: RelayStore,
                                                          clock: FakeClock) -> None:
    for _ in range(3):
        form_tip(store)
    form_tip(store, ABC)
    clock.advance(hours=1)
    assert form_tip(store) == "NCS-0004"
    assert counted(store) == [("ncs", 1)]  # abc's last hour went with the first tip
    clock.advance(hours=1)
    store.purge_expired()  # the hourly purge forgets it even if no tip comes
    assert counted(store) == []


def used_tokens(store: RelayStore) -> list[str]:
    with store.engine.connect() as conn:
        return sorted(str(d) for d in conn.execute(select(form_tokens.c.digest)).scalars())


def test_expired_form_tokens_go_with_an_hours_first_form_tip_or_the_purge(
        store: RelayStore, clock: FakeClock) -> None:
    """accept() forgets earlier hours once an hour, not at every tip."""
    form_tip(store, form_token=("a" * 64, clock.now))  # kept to the next hour
    form_tip(store, form_token=("b" * 64, clock.now + timedelta(hours=1)))
    assert used_tokens(store) == ["a" * 64, "b" * 64]
    clock.advance(hours=1)
    form_tip(store, form_token=("c" * 64, clock.now))
    assert used_tokens(store) == ["b" * 64, "c" * 64]
    clock.advance(hours=1)
    store.purge_expired()
    assert used_tokens(store) == []


def test_concurrent_writers_with_their_own_engines_never_pass_the_limit(url: str,
                                                                        store: RelayStore
                                                                        ) -> None:
    """Each thread has its own RelayStore, as each worker process does: only the
    database's lock stands between them."""
    limit, writers, each = 7, 4, 5
    stores = [RelayStore(url, clock=store.clock) for _ in range(writers)]
    accepted: list[str] = []
    refused: list[StationFull] = []
    lock = threading.Lock()

    def work(own: RelayStore) -> None:
        for _ in range(each):
            try:
                ref = form_tip(own, per_hour=limit)
            except StationFull as exc:
                with lock:
                    refused.append(exc)
            else:
                with lock:
                    accepted.append(ref)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for s in stores:
            s.close()
    assert sorted(accepted) == [f"NCS-{n:04d}" for n in range(1, limit + 1)]
    assert len(refused) == writers * each - limit
    assert counted(store) == [("ncs", limit)]


def test_retry_after_is_the_rest_of_the_hour() -> None:
    assert seconds_to_next_hour(7200.0) == 3600
    assert seconds_to_next_hour(7200.0 + 3599) == 1


def test_an_older_relay_database_is_upgraded_with_its_tips(url: str,
                                                           clock: FakeClock) -> None:
    store = RelayStore(url, clock=clock)
    try:
        store.upgrade()
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with store.engine.begin() as conn:  # back to the schema before the counts
            config.attributes["connection"] = conn
            command.downgrade(config, "0004")
        assert "relay_station_counts" not in inspect(store.engine).get_table_names()
        before = submit(store, NCS, "accepted by the older relay").ref
        store.upgrade()  # what `mailbridge serve` and `db upgrade` do at start
        assert form_tip(store, per_hour=1) == "NCS-0002"
        with pytest.raises(StationFull):
            form_tip(store, per_hour=1)
        assert [r.ref for r in store.list_outbox()] == [before, "NCS-0002"]
    finally:
        store.close()
