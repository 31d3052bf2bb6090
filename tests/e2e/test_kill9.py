"""Kill -9 the relay while it takes a stream of tips: nothing acknowledged is lost or doubled."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path

import httpx

from tests.e2e.support import (
    MAILDIR_STATION,
    RelayProcess,
    free_port,
    maildir_files,
    submit,
    write_config,
)
from tests.waiting import wait_for


def _refs_in(maildir: Path) -> Counter[str]:
    parser = BytesHeaderParser(policy=default_policy)
    refs: Counter[str] = Counter()
    for path in maildir_files(maildir):
        refs[str(parser.parsebytes(path.read_bytes())["X-Mailbridge-Ref"])] += 1
    return refs


def test_every_acknowledged_tip_is_delivered_exactly_once_after_kill9(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port, MAILDIR_STATION)
    relay = RelayProcess(config, port).start()
    acknowledged: list[str] = []
    stop = threading.Event()

    def stream(worker: int) -> None:
        with httpx.Client(timeout=10) as client:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    receipt = submit(client, relay.base, "/s/ncs/cho",
                                     f"Luồng {worker}, tin {n}: thấy hàng lậu qua suối.")
                except (httpx.TransportError, AssertionError):
                    return  # the relay died mid-request: that tip was never acknowledged
                acknowledged.append(receipt.ref)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acknowledged) >= 10, "ten acknowledged tips", 60)
    time.sleep(random.uniform(0.0, 0.5))
    relay.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    acked = set(acknowledged)
    assert len(acked) == len(acknowledged)

    relay = RelayProcess(config, port).start()
    try:
        maildir = tmp_path / "mail" / "ncs"
        wait_for(lambda: acked <= set(_refs_in(maildir)),
                 "every acknowledged tip in the Maildir after restart", 60)
        time.sleep(1.0)  # let anything queued but unacknowledged go out too
    finally:
        relay.stop()
    delivered = _refs_in(tmp_path / "mail" / "ncs")
    doubles = {ref: n for ref, n in delivered.items() if n > 1}
    assert not doubles, f"delivered more than once: {doubles}"
    assert acked <= set(delivered)
