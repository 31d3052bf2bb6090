"""OpenPGP to the station: the cost of encrypting every tip at acceptance, in one run.

Two real ``mailbridge serve`` processes side by side, one station each, the same
Maildir delivery, one without and one with ``openpgp_key``: tips/s and acknowledgement
latency under the same closed loop, then the in-process cost of ``compose`` with and
without ``encrypt`` and of the poller's decryption (gpg with a passphrase-protected key).
Prints numbers; asserts nothing.

    python -m bench.bench_openpgp [--clients 8] [--seconds 10] [--n 200]
"""

from __future__ import annotations

import argparse
import asyncio
import email
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.bench_relay import closed_loop
from mailbridge.core.message import Envelope, Submission, ciphertext, compose, signing_key
from mailbridge.openpgp import Decryptor, Encryptor
from tests.e2e.support import MAILDIR_STATION, RelayProcess, free_port, write_config
from tests.openpgp_keys import PASSPHRASE, gpg, make_key

TEXT = "Có xe tải chở hàng lậu qua bản vào ban đêm, khoảng mười giờ. " * 8


def _keys(root: Path) -> tuple[Path, Path]:
    """A station key made now (public file, secret file with PASSPHRASE)."""
    home = root / "gnupg"
    home.mkdir(mode=0o700)
    fpr = make_key(home, "Trạm <ncs@station.test>", passphrase=PASSPHRASE)
    public, secret = root / "ncs.asc", root / "ncs-secret.asc"
    public.write_bytes(gpg(home, "--armor", "--export", fpr))
    secret.write_bytes(gpg(home, "--passphrase", PASSPHRASE, "--pinentry-mode", "loopback",
                           "--armor", "--export-secret-keys", fpr))
    return public, secret


def _median_ms(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def bench_compose(public: Path, secret: Path, n: int) -> None:
    key = signing_key("b" * 40)
    sub = Submission("ncs", "Đồn Biên phòng Nậm Cha", "tips@ncs.example.test", "NCS-0042",
                     "smuggling", "Buôn lậu", TEXT, where_when="Bản Nậm Cha")
    env = Envelope("tips@relay.example.test", "relay.example.test", "t" * 32)
    encrypt = Encryptor(public, "openpgp_key")
    plain = _median_ms(lambda: compose(sub, env, key), n)
    sealed = _median_ms(lambda: compose(sub, env, key, encrypt=encrypt), n)
    print(f"compose, one tip of {len(TEXT)} characters (median of {n}): plain {plain:.1f} ms, "
          f"encrypted {sealed:.1f} ms (+{sealed - plain:.1f} ms, one gpg process)")
    armour = ciphertext(email.message_from_bytes(compose(sub, env, key, encrypt=encrypt).data))
    assert armour is not None
    decrypt = Decryptor(secret_key=secret, passphrase=PASSPHRASE)
    decrypt(armour)  # the agent's start-up, once per poller
    print(f"poller: decrypting one tip (median of {n // 4}): "
          f"{_median_ms(lambda: decrypt(armour), n // 4):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--n", type=int, default=200, help="tips for the compose figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mb-bench-pgp-") as tmp:
        root = Path(tmp)
        public, secret = _keys(root)
        bench_compose(public, secret, args.n)
        for label, station in (
                ("encryption off", MAILDIR_STATION),
                ("encryption on ", MAILDIR_STATION.replace(
                    'maildir = "mail/ncs"', f'maildir = "mail/ncs"\nopenpgp_key = "{public}"'))):
            folder = root / label.strip().replace(" ", "-")
            port = free_port()
            config = write_config(folder, port, station,
                                  extra="station_tips_per_hour = 1000000\n")
            relay = RelayProcess(config, port).start()
            try:
                assert relay.proc is not None
                print(f"{label}:", end=" ", flush=True)
                asyncio.run(closed_loop(relay.base, relay.proc.pid, args.clients, args.seconds))
            finally:
                relay.stop()


if __name__ == "__main__":
    main()
