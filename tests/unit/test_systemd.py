"""The shipped units: valid for systemd, and hardened (exposure ≤ 2.0 each)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "systemd").glob("*.service"))
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_the_units_are_there() -> None:
    assert [u.name for u in UNITS] == ["mailbridge-poller.service", "mailbridge-purge@.service",
                                       "mailbridge-relay.service"]
    assert (ROOT / "systemd" / "mailbridge-purge@.timer").is_file()


def _instance(unit: Path, folder: Path) -> Path:
    """A copy systemd can load: a template as its station instance, and the install
    path of the command swapped for one that exists here."""
    copy = folder / unit.name.replace("@.", "@station.")
    copy.write_text(unit.read_text().replace("/opt/mailbridge/bin/mailbridge", "/usr/bin/true"))
    return copy


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_the_unit_verifies_without_a_warning(unit: Path, tmp_path: Path) -> None:
    """Unknown or misspelt keys are only warnings to systemd: any output is a failure."""
    paths = [_instance(unit, tmp_path)]
    timer = unit.with_suffix(".timer")
    if timer.is_file():
        paths.append(_instance(timer, tmp_path))
    proc = _analyze("verify", *map(str, paths))
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_the_unit_is_hardened(unit: Path) -> None:
    proc = _analyze("security", "--offline=true", str(unit))
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", proc.stdout)
    assert found is not None, proc.stdout + proc.stderr
    assert float(found.group(1)) <= 2.0, proc.stdout
