"""The officers' desk on a big ledger, as an officer starts it from the shell.

    .venv/bin/python -m bench.bench_ledger [--tips 100000] [--repeat 3]

Seeds the officers' benchmark ledger (bench_tui.seed), writes a station-side config
with this OS account as an officer of every station, then starts a fresh
``mailbridge ledger`` process in a tmux pseudo-terminal (120×40) and reads the screen
back: the time to a usable list (a tip's row on screen, Python start-up included),
then, after ``/``, the word but its last letter and its list, the time from the last
letter to the first page (the count line says "Đang tải…") and to its count. Last, a
full-year ``mailbridge report`` on a
pseudo-terminal (bench_report.on_a_terminal). Prints medians in milliseconds.
"""

from __future__ import annotations

import argparse
import getpass
import itertools
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.bench_report import ROOT, on_a_terminal
from bench.bench_tui import STATIONS, seed
from mailbridge.station.ledger.db import upgrade

SOCKET = f"mailbridge-bench-{os.getpid()}"  # a tmux server of our own, one per run
RUNS = itertools.count(1)
ROW = re.compile(r"^[A-Z]{3}-\d{6} +\d{4}-\d\d-\d\d \d\dh", re.MULTILINE)
COUNT = re.compile(r"^(?:● .*· )?(\d+) tin\b")


def write_config(folder: Path, officer: str) -> Path:
    stations = "".join(f'\n[[stations]]\nid = "{sid}"\nname = "Đồn Biên phòng {sid.upper()}"\n'
                       f'mailbox = "{sid}@example.test"\nofficers = {{ {officer} = "Cán bộ" }}\n'
                       for sid in STATIONS)
    path = folder / "station.toml"
    path.write_text('[relay]\naddress = "tips@relay.example.test"\n\n[ledger]\n'
                    'database = "sqlite:///ledger.db"\n'
                    'relay_public_keys = ["cuBKv6+h1cuODxZ9Ik/VnKx+wslXoX9c2PpUv2zhp28="]\n'
                    + stations, encoding="utf-8")
    return path


class Pane:
    """A program in a tmux pane of its own, read through one control-mode client.

    The screen is captured over that client when the program has written something
    (tmux's ``%output``), never by polling with a new process every few milliseconds:
    a stream of ``tmux capture-pane`` processes took most of a core from the program
    it was timing on this 2-core box."""

    def __init__(self, command: str, width: int = 120, height: int = 40) -> None:
        self.socket = f"{SOCKET}-{next(RUNS)}"
        self.start = time.perf_counter()
        self.tmux("new-session", "-d", "-s", "desk", "-x", str(width), "-y", str(height),
                  command)
        self.tmux("set-option", "-t", "desk", "window-size", "manual")
        self.client = subprocess.Popen(["tmux", "-L", self.socket, "-C", "attach", "-t", "desk"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, encoding="utf-8", errors="replace")
        self.output = threading.Event()
        self.replies: queue.Queue[list[str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True,
                              capture_output=True, text=True).stdout

    def _read(self) -> None:
        assert self.client.stdout is not None
        block: list[str] | None = None
        for line in self.client.stdout:
            if line.startswith("%output"):
                self.output.set()
            elif line.startswith("%begin"):
                block = []
            elif line.startswith(("%end", "%error")) and block is not None:
                self.replies.put(block)
                block = None
            elif block is not None:
                block.append(line)

    def screen(self) -> str:
        assert self.client.stdin is not None
        self.client.stdin.write("capture-pane -p -t desk\n")
        self.client.stdin.flush()
        while True:  # the first reply may be to the attach itself: skip empty ones
            lines = self.replies.get(timeout=30)
            if lines:
                return "".join(lines)

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", "-t", "desk", *(["-l"] if literal else []), *keys)

    def until(self, predicate: Callable[[str], bool], what: str,
              timeout: float = 60.0) -> float:
        """The moment (perf_counter) the screen first satisfies *predicate*."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            self.output.clear()
            if predicate(self.screen()):
                return time.perf_counter()
            self.output.wait(timeout=0.5)
        raise SystemExit(f"timed out waiting for {what}:\n{self.screen()}")

    def close(self) -> None:
        self.tmux("kill-server")
        self.client.wait(timeout=10)


def count_line(text: str) -> str:
    lines = text.rstrip("\n").splitlines()
    return lines[-2].strip() if len(lines) >= 2 else ""


def shown_count(text: str) -> int | None:
    found = COUNT.match(count_line(text))
    return int(found.group(1)) if found else None


def one_run(config: Path, word: str) -> tuple[float, float, float]:
    """(to a usable list, to the word's first page, to its count) in seconds."""
    pane = Pane(f"cd {ROOT} && exec {sys.executable} -m mailbridge --config {config} ledger")
    try:
        usable = pane.until(lambda s: ROW.search(s) is not None, "the first page") - pane.start
        pane.until(lambda s: shown_count(s) is not None, "the count")
        total = shown_count(pane.screen())
        pane.keys("/")
        pane.until(lambda s: "⏎ Xem" not in s, "the search box")  # the list's keys gone
        # As an officer types: the word but its last letter, its list settled, then the
        # last letter, timed to the first page ("Đang tải…" on the count line) and the count.
        pane.keys(word[:-1], literal=True)
        pane.until(lambda s: shown_count(s) not in (None, total) and "giá trị" in count_line(s),
                   "the search so far, its figures included")
        typed = time.perf_counter()
        pane.keys(word[-1], literal=True)
        first = pane.until(lambda s: count_line(s).startswith("Đang tải"), "the first page")
        counted = pane.until(lambda s: shown_count(s) is not None, "the search's count")
        return usable, first - typed, counted - typed
    finally:
        pane.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tips", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--word", default="suoi", help="a common word (in most tips)")
    opts = parser.parse_args()
    if shutil.which("tmux") is None:
        raise SystemExit("bench_ledger needs tmux (scripts/system-packages)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'ledger.db'}"
        upgrade(url)
        seed(url, opts.tips)
        config = write_config(folder, getpass.getuser())
        runs = [one_run(config, opts.word) for _ in range(opts.repeat)]
        report = [on_a_terminal(["--config", str(config), "report", "--from", "2025-01-01",
                                 "--to", "2025-12-31"]) for _ in range(opts.repeat)]
    print(f"{opts.tips} tips, {len(STATIONS)} stations, median of {opts.repeat} fresh "
          "processes on a pseudo-terminal")
    for label, values in (("mailbridge ledger: a usable list", [r[0] for r in runs]),
                          (f"search {opts.word!r}: first page", [r[1] for r in runs]),
                          (f"search {opts.word!r}: counted", [r[2] for r in runs]),
                          ("report, full year 2025 (table)", report)):
        print(f"{label:<38} {statistics.median(values) * 1000:7.0f} ms  "
              f"(min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})")


if __name__ == "__main__":
    main()
