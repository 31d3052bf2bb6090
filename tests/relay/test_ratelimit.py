"""Rate limit per network prefix, keyed by an HMAC, per clock hour (pure logic)."""

from __future__ import annotations

import pytest

from mailbridge.relay.ratelimit import RateLimiter, network_of

KEY = b"r" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 3600.0 * 500_000

    def __call__(self) -> float:
        return self.now


def scope(host: str | None) -> dict[str, object]:
    return {"type": "http", "client": (host, 51234) if host is not None else None}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.mark.parametrize(("a", "b", "same"), [
    ("203.0.113.7", "203.0.113.250", True),
    ("203.0.113.7", "203.0.114.7", False),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2:ffff::9", True),
    ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
    ("::ffff:203.0.113.7", "203.0.113.9", True),
    ("not-an-ip", "", True),
])
def test_network_prefix(a: str, b: str, same: bool) -> None:
    assert (network_of(a) == network_of(b)) is same


def test_limit_per_network_per_hour(clock: Clock) -> None:
    limiter = RateLimiter(KEY, 3, clock=clock)
    assert [limiter.hit(scope("198.51.100.1")) for _ in range(4)] == [True, True, True, False]
    assert limiter.hit(scope("198.51.100.99")) is False  # same /24
    assert limiter.hit(scope("198.51.101.1")) is True  # another /24
    assert limiter.hit(scope(None)) is True  # no address known: one shared bucket


def test_a_new_hour_starts_afresh(clock: Clock) -> None:
    limiter = RateLimiter(KEY, 1, clock=clock)
    assert limiter.hit(scope("198.51.100.1")) is True
    assert limiter.hit(scope("198.51.100.1")) is False
    clock.now += 3600
    assert limiter.hit(scope("198.51.100.1")) is True
    assert len(limiter) == 1


def test_only_keyed_hashes_are_held(clock: Clock) -> None:
    limiter = RateLimiter(KEY, 5, clock=clock)
    limiter.hit(scope("198.51.100.1"))
    (bucket,) = limiter._counts
    assert network_of("198.51.100.1")[:3] not in bucket
    other = RateLimiter(b"o" * 32, 5, clock=clock)
    other.hit(scope("198.51.100.1"))
    assert set(other._counts) != {bucket}  # another installation: other keys


def test_the_key_changes_every_hour(clock: Clock) -> None:
    """Last hour's buckets cannot be recomputed, even with the installation's key."""
    limiter = RateLimiter(KEY, 5, clock=clock)
    limiter.hit(scope("198.51.100.1"))
    (first,) = limiter._counts
    limiter.hit(scope("198.51.100.1"))
    assert set(limiter._counts) == {first}  # one key for the whole hour
    clock.now += 3600
    limiter.hit(scope("198.51.100.1"))
    assert first not in limiter._counts
    again = RateLimiter(KEY, 5, clock=clock)  # the same secret, started afresh
    again.hit(scope("198.51.100.1"))
    assert set(again._counts).isdisjoint({first, *limiter._counts})


def test_memory_is_bounded_and_fails_open(clock: Clock) -> None:
    limiter = RateLimiter(KEY, 1, max_networks=10, clock=clock)
    for i in range(50):
        assert limiter.hit(scope(f"10.0.{i}.1")) is True
    assert len(limiter) == 10
    assert limiter.hit(scope("10.0.0.1")) is False  # networks already counted stay limited


def _proxied(peer: str, forwarded: str) -> dict[str, object]:
    return {"type": "http", "client": (peer, 40000),
            "headers": [(b"x-forwarded-for", forwarded.encode())]}


def test_behind_a_trusted_proxy_each_network_has_its_own_bucket(clock: Clock) -> None:
    limiter = RateLimiter(KEY, 1, trusted_proxies=["127.0.0.1"], clock=clock)
    assert limiter.hit(_proxied("127.0.0.1", "198.51.100.7"))
    assert limiter.hit(_proxied("127.0.0.1", "203.0.113.9"))  # another network
    assert not limiter.hit(_proxied("127.0.0.1", "203.0.113.200"))  # same /24 again
    # Only the hop the proxy added counts: a client cannot pick its bucket.
    assert not limiter.hit(_proxied("127.0.0.1", "192.0.2.1, 203.0.113.5"))


def test_forwarded_for_from_an_untrusted_peer_is_ignored(clock: Clock) -> None:
    limiter = RateLimiter(KEY, 1, trusted_proxies=["127.0.0.1"], clock=clock)
    assert limiter.hit(_proxied("198.51.100.7", "192.0.2.1"))
    assert not limiter.hit(_proxied("198.51.100.8", "192.0.2.99"))


def test_a_total_cap_holds_across_networks_and_past_the_memory_bound(clock: Clock) -> None:
    limiter = RateLimiter(KEY, 5, max_networks=2, total_per_hour=3, clock=clock)
    assert [limiter.hit(scope(f"198.51.{n}.1")) for n in range(5)] == \
        [True, True, True, False, False]
    clock.now += 3600
    assert limiter.hit(scope("198.51.9.1"))
