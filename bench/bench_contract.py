"""The signed contract's cost: composing a tip on the relay, checking it on the station.

Pure (no servers): the relay's ``compose`` (build, sign, serialise, parse back and
verify) against building and serialising alone, its DKIM signature at delivery
(RSA-2048, dkimpy with OpenSSL's RSA step), and the poller's ``index_message``
of a signed tip with the relay's key (verified) and without (the forged path).
Prints numbers; asserts nothing.

    python -m bench.bench_contract [--rounds 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.policy import SMTP

import dkim
import dkim.crypto

from mailbridge.core.message import (
    Envelope,
    RelayIdentity,
    Submission,
    build_message,
    compose,
    signing_key,
)
from mailbridge.core.receipts import new_reply_token
from mailbridge.relay.dkim import DkimSigner, _openssl_rsa_sign, generate_key
from mailbridge.station.poller.index import index_message

KEY = signing_key("bench-contract-secret-" + "b" * 32)
ENV = Envelope("tips@relay.example.test", "relay.example.test", new_reply_token())
SUB = Submission(
    station_id="ncs", station_name="Đồn Biên phòng Nậm Cha", mailbox="tips@ncs.example.test",
    ref="NCS-0042", category_id="smuggling", category_label="Buôn lậu",
    text="Có người lạ mang nhiều gói hàng qua đường mòn sau chợ vào ban đêm, đi về phía "
         "bản Nậm Cắn. " * 3,
    placement_id="cho", placement_label="Chợ phiên", where_when="Chợ, sáng thứ bảy",
    received_hour=datetime(2026, 11, 23, 9, tzinfo=UTC))


def per_call_ms(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Median and 99th percentile of one call, in ms, over *rounds* calls."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    rounds = parser.parse_args().rounds
    raw = compose(SUB, ENV, KEY).data
    trusted = RelayIdentity(ENV.relay_address, (bytes(KEY.verify_key),))
    untrusted = RelayIdentity(ENV.relay_address, ())
    signer = DkimSigner(ENV.relay_domain, "mailbridge", generate_key())
    pk = dkim.crypto.parse_pem_private_key(signer.key_pem)
    digest = dkim.HashThrough(hashlib.sha256())
    digest.update(raw)
    rows = {
        "relay: build + serialise (unsigned)":
            lambda: build_message(SUB, ENV).as_bytes(policy=SMTP),
        "relay: compose (+ sign, parse back, verify)": lambda: compose(SUB, ENV, KEY),
        "relay: DKIM-sign at delivery": lambda: signer.sign(raw),
        "  its RSA step by OpenSSL (what it uses)": lambda: _openssl_rsa_sign(digest, pk),
        "  its RSA step by dkimpy (pure Python)":
            lambda: dkim.crypto.RSASSA_PKCS1_v1_5_sign(digest, pk),
        "station: index a signed tip (verified)": lambda: index_message(raw, relay=trusted),
        "station: index it without the key (forged)": lambda: index_message(raw, relay=untrusted),
    }
    print(f"contract, {len(raw)} bytes a tip, {rounds} rounds each: median / p99 per call")
    for name, fn in rows.items():
        median, p99 = per_call_ms(fn, rounds)
        print(f"  {name:<46} {median:6.3f} ms / {p99:6.3f} ms")


if __name__ == "__main__":
    main()
