"""Opening the ledger: `ledger` and `report` never create one, URLs never show their
password, and the files the ledger writes are private whatever the umask."""

from __future__ import annotations

import getpass
import subprocess
import sys
from pathlib import Path

import pytest

from mailbridge.core.text import mask_passwords
from mailbridge.station.ledger.db import (
    display_url,
    make_engine,
    session_factory,
    upgrade,
)
from mailbridge.station.ledger.store import LedgerStore
from mailbridge.station.tui.data import save_attachment
from tests.conftest import mode

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s" * 40
PASSWORD = "s3cret-pw"


def write_config(folder: Path, database: str) -> Path:
    """A station config whose only officer is the OS account running the tests."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "mailbridge.toml"
    config.write_text(f"""
[relay]
address = "tips@relay.example.test"
secret_env = "MB_SECRET"

[ledger]
database = "{database}"

[[stations]]
id = "ncs"
name = "Đồn Biên phòng Nậm Cha"
mailbox = "tips@ncs.example.test"
maildir = "mail/ncs"
officers = {{ "{getpass.getuser()}" = "Cán bộ trực ban" }}
""", encoding="utf-8")
    return config


def mailbridge(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbridge", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
                          env={"MB_SECRET": SECRET, "PATH": "", "TERM": "dumb"},
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", [["ledger"], ["report"]])
def test_a_missing_ledger_is_one_line_and_is_not_created(tmp_path: Path,
                                                         command: list[str]) -> None:
    missing = tmp_path / "state" / "ledger.db"
    result = mailbridge(write_config(tmp_path, f"sqlite:///{missing}"), *command)
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "ledger.database" in lines[0] and f"{missing} does not exist" in lines[0]
    assert "run `mailbridge db upgrade --role station` or `mailbridge poll` first" in lines[0]
    assert not missing.parent.exists()


@pytest.mark.parametrize(("database", "command"), [
    (f"postgresql://mb:{PASSWORD}@127.0.0.1:notaport/ledger", ["report"]),
    (f"postgresql://mb:{PASSWORD}@127.0.0.1:notaport/ledger", ["db", "upgrade", "--role",
                                                               "station"]),
    (f"mysql://mb:{PASSWORD}@127.0.0.1/ledger", ["report"]),
])
def test_a_database_url_is_shown_without_its_password(tmp_path: Path, database: str,
                                                       command: list[str]) -> None:
    result = mailbridge(write_config(tmp_path, database), *command)
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ledger.database" in lines[0], lines
    assert "mb:***@127.0.0.1" in lines[0]
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(("url", "shown"), [
    (f"postgresql://mb:{PASSWORD}@db.example/ledger", "postgresql://mb:***@db.example/ledger"),
    (f"postgresql+psycopg://mb:{PASSWORD}@h:5432/l", "postgresql+psycopg://mb:***@h:5432/l"),
    (f"postgresql://mb:{PASSWORD}@h:notaport/l", "postgresql://mb:***@h:notaport/l"),
    ("postgresql://mb@h/l", "postgresql://mb@h/l"),
    ("sqlite:////var/lib/mailbridge/ledger.db", "sqlite:////var/lib/mailbridge/ledger.db"),
])
def test_display_url_masks_the_password(url: str, shown: str) -> None:
    assert display_url(url) == shown
    assert mask_passwords(f"could not open {url} today") == f"could not open {shown} today"


@pytest.mark.usefixtures("umask_022")
def test_the_ledger_and_its_attachments_are_private(tmp_path: Path) -> None:
    ledger = tmp_path / "state" / "ledger.db"
    upgrade(f"sqlite:///{ledger}")
    engine = make_engine(f"sqlite:///{ledger}")
    try:
        with engine.begin() as conn:  # a write, so the -wal and -shm files exist
            conn.exec_driver_sql("CREATE TABLE probe (x INTEGER)")
            assert {mode(p) for p in ledger.parent.glob("ledger.db*")} == {0o600}
            assert len(list(ledger.parent.glob("ledger.db*"))) == 3
        store = LedgerStore(session_factory(engine), "ncs", "tips@ncs.example.test",
                            tmp_path / "attachments")
        stored = tmp_path / "attachments" / store.store_attachment(b"%PDF-1.4", "ab" + "0" * 62)
    finally:
        engine.dispose()
    assert mode(ledger.parent) == 0o700
    assert (mode(stored), mode(stored.parent), mode(tmp_path / "attachments")) == (
        0o600, 0o700, 0o700)
    saved = save_attachment(stored, tmp_path, "biên bản.pdf")
    assert saved.name == "biên bản.pdf" and mode(saved) == 0o600
    assert save_attachment(stored, tmp_path, "biên bản.pdf").name == "biên bản-1.pdf"
