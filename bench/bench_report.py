"""Commander's figures and the case file on a big ledger, as a user runs them.

    .venv/bin/python -m bench.bench_report [--tips 100000] [--repeat 3]

Seeds the officers' benchmark ledger (bench_tui.seed: four stations, three tips an
hour from 2024), writes a station-side config, then times fresh ``mailbridge``
processes with their output on a pseudo-terminal, Python start-up included: a
full-year report (table), the same with ``--pdf``, a one-month PDF briefing, and
``ledger export`` of one tip. Prints the median wall time of each, in seconds.
"""

from __future__ import annotations

import argparse
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.bench_tui import STATIONS, seed
from mailbridge.station.ledger.db import upgrade

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """[relay]
address = "tips@relay.example.test"

[ledger]
database = "sqlite:///ledger.db"
relay_public_keys = ["cuBKv6+h1cuODxZ9Ik/VnKx+wslXoX9c2PpUv2zhp28="]
"""


def write_config(folder: Path) -> Path:
    stations = "".join(f'\n[[stations]]\nid = "{sid}"\nname = "Đồn Biên phòng {sid.upper()}"\n'
                       f'mailbox = "{sid}@example.test"\n' for sid in STATIONS)
    path = folder / "station.toml"
    path.write_text(CONFIG + stations, encoding="utf-8")
    return path


def on_a_terminal(args: list[str]) -> float:
    """Seconds for ``mailbridge ARGS`` in a fresh process writing to a pseudo-terminal."""
    master, slave = pty.openpty()
    drained = threading.Thread(target=_drain, args=(master,), daemon=True)
    drained.start()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mailbridge", *args], stdout=slave,
                          stderr=subprocess.PIPE, cwd=ROOT, check=False, timeout=600)
    elapsed = time.perf_counter() - start
    os.close(slave)
    drained.join(timeout=10)
    os.close(master)
    if proc.returncode != 0:
        raise SystemExit(f"mailbridge {' '.join(args)} failed: {proc.stderr.decode()}")
    return elapsed


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:  # the terminal's far side closed: the process is done
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tips", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'ledger.db'}"
        upgrade(url)
        seed(url, opts.tips)
        config = str(write_config(folder))
        runs = {
            "report, full year 2025 (table)": ["report", "--from", "2025-01-01",
                                               "--to", "2025-12-31"],
            "report, full year 2025 + --pdf": ["report", "--from", "2025-01-01", "--to",
                                               "2025-12-31", "--pdf", f"{tmp}/year.pdf"],
            "report --month 2025-06 --pdf": ["report", "--month", "2025-06",
                                             "--pdf", f"{tmp}/month.pdf"],
            "ledger export NCS-000400": ["ledger", "export", "NCS-000400",
                                         "--out", f"{tmp}/case.pdf"],
        }
        print(f"{opts.tips} tips, {len(STATIONS)} stations, median of {opts.repeat} "
              "fresh processes on a pseudo-terminal")
        for label, args in runs.items():
            times = [on_a_terminal(["--config", config, *args]) for _ in range(opts.repeat)]
            print(f"{label:<34} {statistics.median(times):6.2f} s")
        print(f"PDF sizes: year {os.path.getsize(f'{tmp}/year.pdf') // 1024} KB, "
              f"case {os.path.getsize(f'{tmp}/case.pdf') // 1024} KB")


if __name__ == "__main__":
    main()
