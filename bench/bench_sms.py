"""SMS figures: texts per second through ``mailbridge sms-intake`` into the outbox, and the
time from a text landing on the (dummy) phone to its tip in the station's Maildir.

Runs the real intake processes and the real gammu-smsd with its dummy phone driver (a
folder for a modem). Prints numbers; asserts nothing.

    python -m bench.bench_sms [--texts 20] [--latency 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailbridge.config import load_config
from mailbridge.relay.sms import run_sms_intake
from mailbridge.relay.store import RelayStore
from tests.e2e.support import MAILDIR_STATION, free_port, maildir_files, write_config

SMS = """
[stations.sms]
number = "0203 777 000"
device = "{phone}"
connection = "none"
model = "dummy"
per_hour = 1000
"""


def _config(folder: Path) -> Path:
    config = write_config(folder, free_port(), MAILDIR_STATION + SMS.format(phone=folder / "phone"))
    subprocess.run([sys.executable, "-m", "mailbridge", "--config", str(config), "db", "upgrade",
                    "--role", "relay"], check=True, capture_output=True)
    return config


def _env(n: int) -> dict[str, str]:
    return {"SMS_MESSAGES": "1", "SMS_1_NUMBER": f"+8491{n:07d}", "SMS_1_CLASS": "-1",
            "SMS_1_REFERENCE": "0", "SMS_1_TEXT": f"2 tin thu so {n}: xe cho hang qua suoi",
            "DECODED_PARTS": "0"}


def bench_processes(texts: int) -> None:
    """One fresh ``mailbridge sms-intake`` per text, as gammu-smsd runs them: one after
    another, each storing its tip and delivering it to the Maildir."""
    with tempfile.TemporaryDirectory() as tmp:
        config = _config(Path(tmp))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        for n in range(texts):
            subprocess.run([sys.executable, "-m", "mailbridge", "--config", str(config),
                            "sms-intake", "--station", "ncs"], env={**os.environ, **_env(n)},
                           check=True, capture_output=True)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / texts
        delivered = len(maildir_files(Path(tmp) / "mail" / "ncs"))
    print(f"sms-intake, a process per text (store + deliver): {texts / elapsed:.2f} texts/s "
          f"({elapsed / texts * 1000:.0f} ms each, {cpu * 1000:.0f} ms of CPU; "
          f"{delivered} delivered; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")


def bench_in_process(texts: int) -> None:
    """The same work without Python's start-up: read, count, compose, sign, store."""
    with tempfile.TemporaryDirectory() as tmp:
        config = _config(Path(tmp))
        settings = load_config(config, env={})
        start = time.perf_counter()
        for n in range(texts):
            run_sms_intake(settings, "ncs", _env(n), deliver=False, configure_logging=False)
        elapsed = time.perf_counter() - start
        store = RelayStore(settings.relay.database)
        queued = store.pending_count()
        store.close()
    print(f"sms-intake work in one process (to the outbox, no delivery): "
          f"{texts / elapsed:.1f} texts/s ({elapsed / texts * 1000:.1f} ms each, "
          f"{queued} queued)")


def bench_latency(samples: int, poll_seconds: int = 1) -> None:
    """A text saved on the dummy phone while gammu-smsd runs, until its tip is a file in
    the station's Maildir: gammu's poll, the intake's start, store and delivery."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "phone").mkdir()
        config = _config(folder)
        smsdrc = folder / "smsdrc"
        subprocess.run([sys.executable, "-m", "mailbridge", "--config", str(config),
                        "sms-config", "--station", "ncs", "--out", str(smsdrc),
                        "--poll-seconds", str(poll_seconds)], check=True, capture_output=True)
        mail = folder / "mail" / "ncs"
        daemon = subprocess.Popen(["gammu-smsd", "-c", str(smsdrc)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times = []
        try:
            for n in range(samples):
                before = len(maildir_files(mail))
                start = time.perf_counter()
                subprocess.run(["gammu", "-c", str(smsdrc), "savesms", "TEXT", "-folder", "1",
                                "-unread", "-sender", f"+8498{n:07d}", "-text",
                                f"tin thu do tre so {n}"], check=True, capture_output=True)
                while len(maildir_files(mail)) == before:
                    if time.perf_counter() - start > 60:
                        raise RuntimeError("no tip after 60 s")
                    time.sleep(0.01)
                times.append(time.perf_counter() - start)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
    print(f"text on the phone -> tip in the Maildir (gammu-smsd polling every {poll_seconds} s, "
          f"{samples} texts): median {statistics.median(times):.2f} s, "
          f"min {min(times):.2f} s, max {max(times):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20)
    parser.add_argument("--latency", type=int, default=5, help="texts to time end to end")
    args = parser.parse_args()
    bench_in_process(args.texts * 5)
    bench_processes(args.texts)
    bench_latency(args.latency)


if __name__ == "__main__":
    main()
