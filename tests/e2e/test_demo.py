"""`mailbridge demo --once`: the main job on the embedded default, as `make demo` runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, func, select

from mailbridge.station.ledger.models import Tip
from tests.e2e.support import ROOT, free_port, maildir_files


def test_demo_sends_indexes_and_prints_the_urls(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "mailbridge", "demo", "--dir", str(folder), "--port", str(port),
         "--once"], capture_output=True, text=True, cwd=ROOT, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"http://127.0.0.1:{port}/s/ncs/cho" in result.stdout
    assert len(maildir_files(folder / "mail" / "ncs")) == 2
    assert len(maildir_files(folder / "mail" / "pvs")) == 1
    engine = create_engine(f"sqlite:///{folder / 'ledger.db'}")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Tip)).scalar_one() == 3
        categories = set(conn.execute(select(Tip.category)).scalars())
        assert categories == {"smuggling", "drugs", "residence"}
    engine.dispose()
    # A second run reuses the config and adds three more tips.
    again = subprocess.run(
        [sys.executable, "-m", "mailbridge", "demo", "--dir", str(folder), "--port", str(port),
         "--once"], capture_output=True, text=True, cwd=ROOT, timeout=180, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(maildir_files(folder / "mail" / "ncs")) == 4
