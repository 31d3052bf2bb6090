"""kill -9 at a random moment loses no acknowledged tip and delivers none twice."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from mailbridge.relay.outbox import DeliveryWorker
from mailbridge.relay.store import DELIVERED, RelayStore
from tests.relay.outbox_driver import maildir_station, make_settings, refs_in_maildir

ROOT = Path(__file__).resolve().parents[2]
COUNT = 150


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_loses_nothing_and_duplicates_nothing(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    maildir = tmp_path / "Maildir"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.relay.outbox_driver", url, str(maildir), str(COUNT)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acknowledged: list[str] = []
    kill_after = rng.randint(5, COUNT // 2)
    try:
        while len(acknowledged) < kill_after:
            line = proc.stdout.readline()
            assert line, f"driver ended early with {proc.wait()}"
            acknowledged.append(line.strip())
        time.sleep(rng.uniform(0, 0.05))  # land anywhere: mid-accept, mid-write, mid-mark
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # A ref printed in full was acknowledged; a torn last line was not.
    lines = rest.split("\n")
    acknowledged += [ref for ref in lines[:-1] if ref]
    assert "DONE" not in acknowledged, "the driver finished before the kill"

    store = RelayStore(url)
    try:
        station = maildir_station("crash", maildir)
        worker = DeliveryWorker(make_settings(url, station), store)

        async def drain() -> None:
            await asyncio.to_thread(store.recover_interrupted)
            while await asyncio.to_thread(store.pending_count):
                await worker.deliver_due()

        asyncio.run(drain())
        rows = store.list_outbox()
    finally:
        store.close()

    delivered = Counter(refs_in_maildir(maildir))
    assert all(delivered[ref] == 1 for ref in acknowledged), "an acknowledged tip is missing"
    assert max(delivered.values()) == 1, "a tip was delivered twice"
    assert set(delivered) == {r.ref for r in rows}, "a delivery without an accepted row"
    assert {r.state for r in rows} == {DELIVERED}
    assert len(rows) >= len(acknowledged)
