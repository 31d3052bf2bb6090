"""Per-network submission limit that never keeps an address.

This is the only module that reads the client address (and, for SMS, hashes
the sender's number: ``sms_bucket``). It keeps an HMAC of the
network prefix (/24 for IPv4, /64 for IPv6: one household or phone behind a
carrier), never the address itself, and only in memory, for the current clock
hour. Behind a reverse proxy listed in ``relay.trusted_proxies`` the address
is the last ``X-Forwarded-For`` hop that proxy added; otherwise every villager
would share the proxy's bucket. The key is a random one for each hour, mixed
with a key derived from the installation secret, and it is dropped with the
hour's counters: once an hour is over, not even the secret and a list of
addresses tell which network its buckets stood for.

Counting is a fixed window per UTC hour, so nothing finer than the hour is held
either. Memory is bounded: past ``max_networks`` distinct networks in one hour
new networks are let through uncounted (failing open) rather than letting a
flood of addresses block every villager. Where failing open is not acceptable
(receipt-code lookups, which a guesser spreads over many networks),
``total_per_hour`` caps every network together.

The counts live in one process's memory: with ``relay.workers`` N each worker keeps
its own, so a network may send up to N times ``rate_limit_per_hour`` (the relay's
server divides ``status_lookups_total_per_hour`` among the workers to keep it a
total). The per-station hourly cap, which must be exact, is counted in the relay
database instead (``RelayStore.accept`` with ``per_hour``): station ids only.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

IPV4_PREFIX = 24
IPV6_PREFIX = 64


def network_of(host: str) -> bytes:
    """The network prefix of *host* as bytes; b"" when it is not an IP address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return b""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    return network.network_address.packed + bytes([prefix])


def _forwarded_for(scope: Mapping[str, Any]) -> str:
    """The address a trusted reverse proxy saw: the last X-Forwarded-For hop.

    Earlier hops are whatever the client wrote and are ignored.
    """
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            return str(value.decode("latin-1").split(",")[-1].strip())
    return ""


SMS_BUCKET_BITS = 16


def sms_bucket(key: bytes, station_id: str, number_key: str) -> str:
    """The bucket a sender's texts to a station are counted in: 16 bits of an HMAC
    under the hour's random key. Even with the key, a bucket stands for one in 65,536
    numbers (some 15,000 of Viet Nam's mobile numbers), not for a phone; two senders
    sharing one in the same hour only share its limit."""
    digest = hmac.new(key, f"{station_id}\0{number_key}".encode(), hashlib.sha256).digest()
    return digest[: SMS_BUCKET_BITS // 8].hex()


class RateLimiter:
    """Allow at most *per_hour* submissions per network prefix in each UTC hour."""

    def __init__(self, key: bytes, per_hour: int, *, max_networks: int = 100_000,
                 total_per_hour: int | None = None, trusted_proxies: Iterable[str] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._total_per_hour = total_per_hour
        self._total = 0
        self._proxies = frozenset(trusted_proxies)
        self._per_hour = per_hour
        self._max = max_networks
        self._clock = clock
        self._hour = -1
        self._hour_key = b""
        self._counts: dict[bytes, int] = {}

    def _bucket(self, scope: Mapping[str, Any]) -> bytes:
        client = scope.get("client")
        host = str(client[0]) if client else ""
        if host in self._proxies:
            host = _forwarded_for(scope) or host
        return hmac.new(self._hour_key, network_of(str(host)), hashlib.sha256).digest()[:16]

    def hit(self, scope: Mapping[str, Any]) -> bool:
        """Count one submission from the request's network; False when over the limit."""
        hour = int(self._clock() // 3600)
        if hour != self._hour:
            self._hour = hour
            self._hour_key = hmac.new(self._key, secrets.token_bytes(32),
                                      hashlib.sha256).digest()
            self._counts.clear()
            self._total = 0
        if self._total_per_hour is not None and self._total >= self._total_per_hour:
            return False
        bucket = self._bucket(scope)
        count = self._counts.get(bucket)
        if count is None:
            if len(self._counts) >= self._max:
                self._total += 1
                return True
            count = 0
        if count >= self._per_hour:
            return False
        self._counts[bucket] = count + 1
        self._total += 1
        return True

    def __len__(self) -> int:
        return len(self._counts)


def seconds_to_next_hour(now: float | None = None) -> int:
    """Seconds until the next UTC hour, when every station's count starts afresh
    (a full station's ``Retry-After``)."""
    return 3600 - int(time.time() if now is None else now) % 3600
