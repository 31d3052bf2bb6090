"""What the relay writes to disk holds tips: 0600 files, 0700 folders, whatever the umask."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailbridge.relay.outbox import DeliveryWorker
from mailbridge.relay.store import RelayStore
from tests.conftest import mode
from tests.relay.outbox_driver import maildir_station, make_settings, submit


@pytest.mark.usefixtures("umask_022")
def test_relay_database_and_maildir_are_private(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    db = tmp_path / "state" / "relay.db"
    url = f"sqlite:///{db}"
    maildir = tmp_path / "mail" / "ncs"
    station = maildir_station("ncs", maildir)
    store = RelayStore(url)
    try:
        store.upgrade()
        submit(store, station, "Có người lạ ở bến sông")
        assert asyncio.run(DeliveryWorker(make_settings(url, station), store).deliver_due()) == 1
        wal, shm = db.with_name("relay.db-wal"), db.with_name("relay.db-shm")
        assert shm.exists()
        assert {p.name: mode(p) for p in (db, wal, shm) if p.exists()} == {
            p.name: 0o600 for p in (db, wal, shm) if p.exists()}
        assert mode(db.parent) == 0o700
        folders = [maildir.parent, maildir, *(maildir / sub for sub in ("tmp", "new", "cur"))]
        assert [mode(f) for f in folders] == [0o700] * len(folders)
        (delivered,) = (maildir / "new").iterdir()
        assert mode(delivered) == 0o600
        assert mode(tmp_path) == 0o755  # a folder that already existed is left as it was
    finally:
        store.close()


@pytest.mark.usefixtures("umask_022")
def test_an_older_world_readable_database_is_narrowed(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    first = RelayStore(f"sqlite:///{db}")
    first.upgrade()
    first.close()
    for path in tmp_path.iterdir():
        path.chmod(0o644)
    store = RelayStore(f"sqlite:///{db}")
    try:
        assert store.pending_count() == 0
        assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
            p.name: 0o600 for p in tmp_path.iterdir()}
    finally:
        store.close()
