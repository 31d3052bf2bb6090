"""Status lookups: what opening a conversation with a receipt code costs.

Seeds a real SQLite relay database with conversations (each with replies), then
opens them by their codes: the receipt hash and the sealing key (two Argon2id
hashes) plus the queries and the unsealing, in one thread and in two (the box
has two cores). Then the same through HTTP against the real relay in this
process (/status POSTs, limits raised), with the page weights of /status and
of a conversation page (raw and gzip) for the form's byte budget. Prints
numbers; asserts nothing.

    python -m bench.bench_status [--tips 2000] [--lookups 200]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from mailbridge.config import load_config
from mailbridge.core.conversation import Sealer
from mailbridge.core.receipts import ReceiptHasher, derive_key, new_receipt_code, new_reply_token
from mailbridge.relay.store import RelayStore
from tests.e2e.support import HOTLINE_STATION, relay_in_thread, relay_toml, submit
from tests.relay.outbox_driver import builder, maildir_station

SECRET = "bench-status-" + "x" * 40
STATION = maildir_station("ncs", Path("/nonexistent"))
REPLY = "Cảm ơn bạn đã báo tin. Chúng tôi sẽ kiểm tra và liên hệ lại nếu cần thêm thông tin."


def spread(times: list[float]) -> str:
    ordered = sorted(times)
    return (f"median {statistics.median(ordered):.1f} ms,"
            f" p99 {ordered[int(len(ordered) * .99)]:.1f} ms")


def seed(store: RelayStore, hasher: ReceiptHasher, sealer: Sealer, tips: int) -> list[str]:
    codes = []
    for i in range(tips):
        code, token = new_receipt_code(), new_reply_token()
        derived = hasher.derive(code)
        store.accept(STATION, builder(STATION, f"tin {i}", token),
                     receipt_hash=derived.receipt_hash, reply_token=token,
                     keys=sealer.new_keys(derived.seal_key), category_id="drugs")
        for _ in range(3):
            store.add_reply(token, REPLY, station_id="ncs")
        codes.append(code)
    return codes


def pure(folder: Path, tips: int, lookups: int) -> None:
    store = RelayStore(f"sqlite:///{folder / 'relay.db'}")
    store.upgrade()
    hasher = ReceiptHasher(derive_key(SECRET, "receipt"))
    sealer = Sealer(derive_key(SECRET, "conversation"))
    start = time.perf_counter()
    codes = seed(store, hasher, sealer, tips)
    print(f"seeded {tips} conversations (3 replies each) in {time.perf_counter() - start:.1f} s")

    def open_one(code: str) -> float:
        t = time.perf_counter()
        derived = hasher.derive(code)
        assert store.open_conversation(derived.receipt_hash, derived.seal_key, sealer) is not None
        return (time.perf_counter() - t) * 1000

    sample = codes[:lookups]
    for threads in (1, 2):
        with ThreadPoolExecutor(threads) as pool:
            start = time.perf_counter()
            times = list(pool.map(open_one, sample))
            wall = time.perf_counter() - start
        print(f"  open a conversation, {threads} thread(s): {len(sample) / wall:6.1f} lookups/s,"
              f" {spread(times)}")
    t = time.perf_counter()
    for code in sample:
        hasher.hash(code)
    each = (time.perf_counter() - t) / len(sample) * 1000
    print(f"  of which the receipt code's one Argon2id: {each:.1f} ms")
    store.close()


def http(folder: Path, lookups: int) -> None:
    config = relay_toml(HOTLINE_STATION, secret_env="MB_SECRET", extra=(
        "status_lookups_per_hour = 1000000\nstatus_lookups_total_per_hour = 1000000\n"))
    (folder / "mailbridge.toml").write_text(config, encoding="utf-8")
    settings = load_config(folder / "mailbridge.toml", env={"MB_SECRET": SECRET})
    with relay_in_thread(settings) as base, httpx.Client(timeout=30) as client:
        codes = [submit(client, base, "/s/ncs/cho", f"Tin thử {i}.").code for i in range(20)]
        empty = client.get(base + "/status")
        opened = client.post(base + "/status", data={"code": codes[0]})
        for name, page in (("status page (code field)", empty),
                           ("conversation page (no reply yet)", opened)):
            packed = len(gzip.compress(page.content, 6))
            print(f"  {name:<34} {len(page.content):6d} B raw {packed:6d} B gzip")
        times = []
        start = time.perf_counter()
        for i in range(lookups):
            t = time.perf_counter()
            assert client.post(base + "/status", data={"code": codes[i % 20]}).status_code == 200
            times.append((time.perf_counter() - t) * 1000)
        wall = time.perf_counter() - start
        print(f"  POST /status over HTTP, one client: {lookups / wall:6.1f} lookups/s,"
              f" {spread(times)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tips", type=int, default=2000)
    parser.add_argument("--lookups", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-status-") as folder:
        pure(Path(folder), args.tips, args.lookups)
    with tempfile.TemporaryDirectory(prefix="bench-status-http-") as folder:
        http(Path(folder), args.lookups)


if __name__ == "__main__":
    main()
