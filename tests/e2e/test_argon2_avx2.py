"""scripts/argon2-avx2: the locked argon2-cffi-bindings built from source for AVX2 and
installed into a venv of its own here, then every receipt it derives compared with the
locked build's in this process: receipts stored by one must be found by the other."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from mailbridge.core.receipts import ReceiptHasher, new_receipt_code

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "argon2-avx2"

DERIVE = """
import json, sys
import _argon2_cffi_bindings
from importlib.metadata import distribution
from mailbridge.core.receipts import ReceiptHasher
asked = json.load(sys.stdin)
hasher = ReceiptHasher(bytes.fromhex(asked["secret"]))
print(json.dumps({
    "module": _argon2_cffi_bindings.__file__,
    "wheel": distribution("argon2-cffi-bindings").read_text("WHEEL"),
    "derived": [[d.receipt_hash, d.seal_key.hex()]
                for d in map(hasher.derive, asked["codes"])]}))
"""


def _has_avx2() -> bool:
    return any(line.startswith("flags") and " avx2" in line
               for line in Path("/proc/cpuinfo").read_text().splitlines())


def _venv_over_this_one(path: Path) -> Path:
    """A venv of its own whose packages fall back to this one's (argon2-cffi, cffi,
    mailbridge): what the script installs there shadows only the binding."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    site = Path(subprocess.run([str(path / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "over-the-project.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return path


@pytest.mark.skipif(not _has_avx2(), reason="this CPU has no AVX2")
def test_the_avx2_build_derives_what_the_locked_wheel_derives(tmp_path: Path) -> None:
    venv = _venv_over_this_one(tmp_path / "venv")
    proc = subprocess.run(["bash", str(SCRIPT), str(venv)], capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("argon2-avx2: built for AVX2; receipt hash "), proc.stdout

    secret = secrets.token_bytes(32)
    codes = [new_receipt_code() for _ in range(20)]
    answer = subprocess.run([str(venv / "bin" / "python"), "-c", DERIVE],
                            input=json.dumps({"secret": secret.hex(), "codes": codes}),
                            capture_output=True, text=True, timeout=60, check=True,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    built = json.loads(answer.stdout)
    assert Path(built["module"]).is_relative_to(venv)  # the new build, not this process's
    assert "Tag: cp310-abi3-linux_x86_64" in built["wheel"]  # built here, not manylinux
    hasher = ReceiptHasher(secret)
    assert built["derived"] == [[d.receipt_hash, d.seal_key.hex()]
                                for d in map(hasher.derive, codes)]


def test_no_venv_there_is_one_line_naming_it(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "none")], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() in (
        [f"argon2-avx2: no venv at {tmp_path / 'none'}"],
        ["argon2-avx2: this CPU has no AVX2: keep the locked wheel"])


def test_a_venv_without_the_locked_binding_is_refused_untouched(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "bare")], check=True,
                   timeout=120)
    before = sorted(p.name for p in (tmp_path / "bare").rglob("*"))
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "bare")], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith((
        f"argon2-avx2: {tmp_path / 'bare'} has argon2-cffi-bindings none, the lock 26.",
        "argon2-avx2: this CPU has no AVX2"))
    assert sorted(p.name for p in (tmp_path / "bare").rglob("*")) == before
