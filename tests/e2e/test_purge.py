"""`mailbridge purge`: what is past its retention leaves both databases, and on SQLite
its bytes leave the files (database and WAL) too."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailbridge.cli import main
from mailbridge.config import load_config
from mailbridge.relay.store import RelayStore, outbox, tips
from mailbridge.station.ledger.db import make_engine, session_factory, upgrade
from mailbridge.station.ledger.models import Attachment, Audit, Message, Quarantine, Tip
from tests.e2e.support import MAILDIR_STATION, write_config
from tests.relay.outbox_driver import submit

LONG_AGO = datetime.now(UTC) - timedelta(days=800)
TOKEN_MARK = b"QUARANTINED-MARKER-7q1z"
AUDIT_MARK = "AUDIT-MARKER-5k2p"
FILE_MARK = b"ATTACHMENT-MARKER-9x3w"
RETENTION = """conversation_days = 30
"""
LEDGER_RETENTION = """quarantine_days = 30
attachment_days = 30
audit_days = 365
"""


def _config(tmp_path: Path, relay_db: str, ledger_db: str) -> Path:
    path = write_config(tmp_path, 8099, MAILDIR_STATION, extra=RETENTION)
    text = path.read_text(encoding="utf-8")
    text = text.replace('database = "sqlite:///relay.db"', f'database = "{relay_db}"')
    text = text.replace('[ledger]\ndatabase = "sqlite:///ledger.db"',
                        f'[ledger]\ndatabase = "{ledger_db}"\n{LEDGER_RETENTION}')
    path.write_text(text, encoding="utf-8")
    return path


def _fill(config: Path) -> str:
    """An old delivered tip on the relay, old quarantine, attachment and audit rows in
    the ledger (and one young audit row); returns the old tip's reply token."""
    settings = load_config(config)
    station = settings.stations["ncs"]
    store = RelayStore(settings.relay.database, clock=lambda: LONG_AGO)
    store.upgrade()
    accepted = submit(store, station, "the old tip")
    for claim in store.claim_due(10, timedelta(minutes=5)):
        store.mark_delivered(claim)
    with store.engine.connect() as conn:
        token = str(conn.execute(select(tips.c.reply_token)).scalar_one())
    assert accepted.ref == "NCS-0001"
    store.close()
    upgrade(settings.ledger.database)
    folder = settings.ledger.attachments_dir / "ab"
    folder.mkdir(parents=True)
    (folder / "abc").write_bytes(FILE_MARK)
    engine = make_engine(settings.ledger.database)
    old = LONG_AGO.replace(tzinfo=None)
    with session_factory(engine)() as s:
        message = Message(station_id="ncs", message_id="<m@x>", raw_sha256="0" * 64, kind="tip",
                          received_hour=old)
        s.add(message)
        s.flush()
        tip = Tip(station_id="ncs", ref="NCS-0001", message_pk=message.id,
                  received_category="drugs", category="drugs", received_hour=old)
        s.add(tip)
        s.flush()
        s.add_all([
            Attachment(message_pk=message.id, filename="a.jpg", content_type="image/jpeg",
                       size=len(FILE_MARK), sha256="abc", stored_path="ab/abc"),
            Quarantine(station_id="ncs", folder="INBOX", uidvalidity=1, uid=1, reason="x",
                       raw=TOKEN_MARK, at=old),
            Audit(tip_id=tip.id, station_id="ncs", actor="a", action="status",
                  reason=AUDIT_MARK, at=old),
            Audit(tip_id=tip.id, station_id="ncs", actor="a", action="note", reason="young"),
        ])
        s.commit()
    engine.dispose()
    return token


def _files(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("*.db*")))


def test_purge_removes_the_bytes_from_sqlite_files(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, "sqlite:///relay.db", "sqlite:///ledger.db")
    token = _fill(config).encode()
    marks = (token, TOKEN_MARK, AUDIT_MARK.encode())
    assert all(mark in _files(tmp_path) for mark in marks)

    assert main(["--config", str(config), "purge", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "relay: would delete 1 tip record(s)" in printed
    assert "relay: would delete 1 delivered or dropped outbox row(s)" in printed
    assert "station: would delete 1 quarantined raw message(s)" in printed
    assert "station: would delete 1 audit row(s)" in printed
    assert all(mark in _files(tmp_path) for mark in marks)

    # The running relay and poller keep their databases open, so their WAL stays.
    running = [sqlite3.connect(tmp_path / name) for name in ("relay.db", "ledger.db")]
    try:
        for conn in running:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        assert main(["--config", str(config), "purge"]) == 0
        found = _files(tmp_path)
        wal_sizes = [wal.stat().st_size for wal in sorted(tmp_path.glob("*.db-wal"))]
    finally:
        for conn in running:
            conn.close()
    printed = capsys.readouterr().out
    assert "station: deleted 1 attachment file(s), older than ledger.attachment_days = 30" \
        in printed
    assert [mark for mark in marks if mark in found] == []
    assert wal_sizes == [0, 0]
    assert not (tmp_path / "attachments" / "ab" / "abc").exists()
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    with session_factory(engine)() as s:
        assert [a.reason for a in s.scalars(select(Audit))] == ["young"]
        assert [a.stored_path for a in s.scalars(select(Attachment))] == [""]  # its proof stays
    engine.dispose()


@pytest.mark.postgres
def test_purge_on_postgresql(tmp_path: Path, postgres_url: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, postgres_url, postgres_url)
    _fill(config)
    assert main(["--config", str(config), "purge"]) == 0
    printed = capsys.readouterr().out
    assert "relay: deleted 1 tip record(s)" in printed
    assert "station: deleted 1 quarantined raw message(s)" in printed
    store = RelayStore(postgres_url)
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tips)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(outbox)).scalar_one() == 0
    store.close()
    engine = make_engine(postgres_url)
    with session_factory(engine)() as s:
        assert s.scalar(select(func.count()).select_from(Quarantine)) == 0
        assert [a.reason for a in s.scalars(select(Audit))] == ["young"]
    engine.dispose()
