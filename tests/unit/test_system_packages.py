"""scripts/system-packages: the one list `make test` and CI install, and its answer when
it cannot install (not root): the one apt-get line to run, and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "system-packages"


def _fake_bin(tmp_path: Path, *, uid: int, installed: set[str]) -> Path:
    """`id` and `dpkg-query` stand-ins: who runs it, and which packages are there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    known = " ".join(sorted(installed))
    (bin_dir / "dpkg-query").write_text(
        "#!/bin/sh\nfor a; do pkg=$a; done\nfor p in " + known + "; do "
        "[ \"$p\" = \"$pkg\" ] && { printf 'install ok installed'; exit 0; }; done\nexit 1\n")
    (bin_dir / "apt-get").write_text("#!/bin/sh\necho apt-get must not run >&2\nexit 9\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


def _run(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin")
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_not_root_prints_the_one_install_line_and_fails(tmp_path: Path) -> None:
    proc = _run(_fake_bin(tmp_path, uid=1000, installed={"make", "openssl", "postgresql"}))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("missing Debian packages; run: sudo apt-get install -y ")
    wanted = lines[0].rpartition("-y ")[2].split()
    assert {"dovecot-imapd", "dovecot-lmtpd", "postfix", "chromium"} <= set(wanted)
    assert "make" not in wanted and "postgresql" not in wanted


def test_nothing_missing_is_silent_and_installs_nothing(tmp_path: Path) -> None:
    listed = SCRIPT.read_text().split("packages=(", 1)[1].split(")", 1)[0].split()
    proc = _run(_fake_bin(tmp_path, uid=1000, installed=set(listed)))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
