"""The relay's outbox after `mailbridge restore`: what was queued in the backup is
delivered, once per file, and the relay goes on accepting (SQLite and PostgreSQL: the
``url`` fixture of tests/relay/conftest.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import stat
from pathlib import Path

from mailbridge.backup import run_backup, run_restore
from mailbridge.relay.outbox import DeliveryWorker
from mailbridge.relay.store import DELIVERED, QUEUED, RelayStore
from tests.relay.outbox_driver import maildir_station, make_settings, refs_in_maildir, submit


def test_the_outbox_resumes_after_a_restore(url: str, tmp_path: Path) -> None:
    station = maildir_station("ncs", tmp_path / "mail")
    settings = dataclasses.replace(make_settings(url, station), role="relay")
    store = RelayStore(url)
    store.upgrade()
    worker = DeliveryWorker(settings, store)
    try:
        submit(store, station, "the first tip")
        submit(store, station, "the second tip")
        lines: list[str] = []
        run_backup(settings, tmp_path / "backup", out=lines.append)
        assert any("secret is NOT in it" in line for line in lines)
        files = [p for p in (tmp_path / "backup").iterdir()]
        assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
        assert stat.S_IMODE((tmp_path / "backup").stat().st_mode) == 0o700
        assert asyncio.run(worker.deliver_due()) == 2

        run_restore(settings, tmp_path / "backup", out=lines.append)
        assert [r.state for r in store.list_outbox()] == [QUEUED, QUEUED]
        assert asyncio.run(worker.deliver_due()) == 2
        assert submit(store, station, "after the restore").ref == "NCS-0003"
        assert asyncio.run(worker.deliver_due()) == 1
        assert [r.state for r in store.list_outbox()] == [DELIVERED] * 3
        assert sorted(refs_in_maildir(tmp_path / "mail")) == ["NCS-0001", "NCS-0002",
                                                              "NCS-0003"]
    finally:
        store.close()
