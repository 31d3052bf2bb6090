"""SQLite writers of several relay processes queue on one lock file, never in SQLite's
busy handler; a holder that never lets go costs the others a clear error, not a hang."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mailbridge.errors import StoreError
from mailbridge.relay.store import RelayStore, WriterLock


def in_child(lock: WriterLock) -> int:
    """Exit status of a forked child that tries *lock*: 0 taken, 1 refused."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, only the lock and an exit status
        try:
            with lock:
                os._exit(0)
        except StoreError:
            os._exit(1)
        os._exit(2)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_another_process_waits_for_the_writer_and_then_gets_its_turn(tmp_path: Path) -> None:
    lock = WriterLock(str(tmp_path / "relay.db"), timeout=0.3)
    with lock:  # held here: another process is refused once its timeout is over
        assert in_child(WriterLock(str(tmp_path / "relay.db"), timeout=0.3)) == 1
    assert in_child(lock) == 0  # a child opens the lock file for itself
    assert stat.S_IMODE((tmp_path / "relay.db-writer").stat().st_mode) == 0o600
    lock.close()


def test_a_stuck_writer_is_an_error_that_names_the_cause(tmp_path: Path) -> None:
    held = WriterLock(str(tmp_path / "relay.db"))
    with held:
        pid = os.fork()
        if pid == 0:
            try:
                with WriterLock(str(tmp_path / "relay.db"), timeout=0.2):
                    os._exit(2)
            except StoreError as exc:
                os._exit(1 if "stuck `mailbridge` process" in str(exc) else 3)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
    held.close()


@pytest.mark.parametrize("database", [":memory:", None])
def test_a_database_without_a_file_has_no_lock_file(database: str | None,
                                                    tmp_path: Path) -> None:
    lock = WriterLock(database)
    with lock:
        pass
    lock.close()
    assert list(tmp_path.iterdir()) == []


def test_the_store_writes_through_the_lock(tmp_path: Path) -> None:
    store = RelayStore(f"sqlite:///{tmp_path / 'relay.db'}")
    try:
        store.upgrade()
        assert (tmp_path / "relay.db-writer").is_file()
    finally:
        store.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file away")
def test_made_by_root_the_lock_file_is_the_database_owners(tmp_path: Path) -> None:
    """`mailbridge outbox` run as root must not leave a lock file the relay's user
    cannot open."""
    database = tmp_path / "relay.db"
    database.touch()
    os.chown(database, 65534, 65534)
    lock = WriterLock(str(database))
    with lock:
        pass
    lock.close()
    made = (tmp_path / "relay.db-writer").stat()
    assert (made.st_uid, made.st_gid) == (65534, 65534)


def test_a_lock_file_it_may_not_open_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "relay.db-writer").mkdir()  # whatever stands there, it is not openable
    lock = WriterLock(str(tmp_path / "relay.db"))
    with pytest.raises(StoreError, match="run this as the relay's user, or give the file "
                                         "to it"), lock:
        pass
