"""A station with an OpenPGP key: the relay's outbox holds only ciphertext from the
moment of acceptance (the tip's transaction), for a tip by mail or SMS too."""

from __future__ import annotations

import email
import shutil
from datetime import timedelta
from pathlib import Path

from mailbridge.config import load_config
from mailbridge.core.message import is_encrypted, signing_key
from mailbridge.relay.store import RelayStore
from mailbridge.relay.unreceipted import accept_unreceipted
from tests.openpgp_keys import StationKeys

CONFIG = """
[relay]
address = "tips@relay.example.test"
domain = "relay.example.test"
secret_env = "MB_SECRET"
database = "sqlite:///relay.db"

[[stations]]
id = "ncs"
mailbox = "tips@ncs.example.test"
maildir = "mail/ncs"
openpgp_key = "ncs.asc"
"""
MARKER = "MARKER-OUTBOX-3F"


def test_the_outbox_row_is_ciphertext_before_any_delivery(
        tmp_path: Path, station_keys: StationKeys) -> None:
    shutil.copy(station_keys.public, tmp_path / "ncs.asc")
    (tmp_path / "mailbridge.toml").write_text(CONFIG, encoding="utf-8")
    settings = load_config(tmp_path / "mailbridge.toml", env={"MB_SECRET": "y" * 40})
    store = RelayStore(settings.relay.database)
    store.upgrade()
    try:
        station = settings.stations["ncs"]
        accepted = accept_unreceipted(settings, store, signing_key("y" * 40), station,
                                      station.categories[0], f"Buôn lậu ở bản {MARKER}")
        assert store.get(accepted.outbox_id).state == "queued"
        files = list(tmp_path.glob("relay.db*"))  # the database and its WAL, undelivered
        assert len(files) >= 2
        for path in files:
            assert MARKER.encode() not in path.read_bytes(), path
        (claimed,) = store.claim_due(1, timedelta(minutes=1))
        assert claimed.ref == accepted.ref
        assert is_encrypted(email.message_from_bytes(claimed.message))
    finally:
        store.close()
