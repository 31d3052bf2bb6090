"""The SMS limiter's state in the relay database: this hour's random key and its 16-bit
buckets, and nothing of an earlier hour once it is over (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import func, select

from mailbridge.relay.ratelimit import sms_bucket
from mailbridge.relay.store import RelayStore, sms_counts, sms_keys
from tests.relay.outbox_driver import FakeClock

# url, clock and store: tests/relay/conftest.py


def count(store: RelayStore, number: str, station: str = "ncs") -> int:
    return store.count_sms(lambda key: sms_bucket(key, station, number))


def rows(store: RelayStore) -> tuple[int, int]:
    with store.engine.connect() as conn:
        keys = conn.execute(select(func.count()).select_from(sms_keys)).scalar_one()
        buckets = conn.execute(select(func.count()).select_from(sms_counts)).scalar_one()
    return int(keys), int(buckets)


def test_each_sender_counts_in_its_own_bucket_per_station(store: RelayStore) -> None:
    assert [count(store, "84912345678") for _ in range(3)] == [1, 2, 3]
    assert count(store, "84987654321") == 1
    assert count(store, "84912345678", station="pvs") == 1
    assert rows(store) == (1, 3)


def test_a_new_hour_has_a_new_key_and_forgets_the_last(store: RelayStore,
                                                       clock: FakeClock) -> None:
    count(store, "84912345678")
    count(store, "84912345678")
    with store.engine.connect() as conn:
        first_key = conn.execute(select(sms_keys.c.key)).scalar_one()
    clock.advance(hours=1)
    assert count(store, "84912345678") == 1
    with store.engine.connect() as conn:
        assert conn.execute(select(sms_keys.c.key)).scalar_one() != first_key
    assert rows(store) == (1, 1)


def test_the_hourly_purge_forgets_the_last_hour_without_a_new_text(
        store: RelayStore, clock: FakeClock) -> None:
    count(store, "84912345678")
    store.purge_expired()
    assert rows(store) == (1, 1)  # this hour's limit still holds
    clock.advance(hours=1)
    store.purge_expired()
    assert rows(store) == (0, 0)


def test_buckets_are_sixteen_bits_and_keyed() -> None:
    assert len(sms_bucket(b"k" * 32, "ncs", "84912345678")) == 4
    assert sms_bucket(b"k" * 32, "ncs", "84912345678") != sms_bucket(
        b"j" * 32, "ncs", "84912345678")
