"""A missing server ends the run with one line saying what to do, not an error per test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = """
import tests.servers.mailstack as mailstack

pytest_plugins = ["tests.servers.fixtures"]
mailstack.REQUIRED_BINARIES = ("/nonexistent/sbin/dovecot",)
"""

TESTS = """
def test_one(mailstack):
    assert mailstack


def test_two(mailstack):
    assert mailstack


def test_three(mailstack):
    assert mailstack
"""


def test_a_missing_mail_server_is_one_line_and_a_runtime_exit(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_needs_mail.py").write_text(TESTS)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), "-c", "/dev/null", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out
    said = [line for line in out.splitlines() if "are not installed" in line]
    assert len(said) == 1, out
    assert "/nonexistent/sbin/dovecot" in said[0] and "scripts/system-packages" in said[0]
    assert "ERROR" not in out and "Traceback" not in out
