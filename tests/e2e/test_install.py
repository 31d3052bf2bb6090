"""`mailbridge install` into a prefix (``--root``), as root: users in the prefix's
etc/passwd, folders, config skeleton, environment file and units with their owners and
modes; a second run changes nothing and never overwrites a config, secret or key."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dotenv import dotenv_values

from mailbridge.config import load_config
from mailbridge.relay.dkim import txt_value

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="needs root and useradd (shadow's --prefix)")


def a_debian_etc(root: Path) -> Path:
    """The account files of a fresh system: root alone."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\n")
    return root


def install(root: Path, role: str, *extra: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "mailbridge", "install", "--role", role,
                           "--root", str(root), *extra],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def ids(root: Path, table: str) -> dict[str, int]:
    lines = (root / "etc" / table).read_text().splitlines()
    return {f[0]: int(f[2]) for f in (line.split(":") for line in lines)}


def owner_and_mode(root: Path, path: str) -> tuple[str, str, str]:
    info = (root / path.lstrip("/")).stat()
    users = {v: k for k, v in ids(root, "passwd").items()}
    groups = {v: k for k, v in ids(root, "group").items()}
    return users[info.st_uid], groups[info.st_gid], f"{stat.S_IMODE(info.st_mode):04o}"


RELAY = {
    "/etc/mailbridge": ("root", "mailbridge", "0750"),
    "/var/lib/mailbridge-relay": ("mailbridge-relay", "mailbridge-relay", "0700"),
    "/etc/mailbridge/relay.toml": ("root", "mailbridge-relay", "0640"),
    "/etc/mailbridge/relay.env": ("mailbridge-relay", "mailbridge-relay", "0600"),
    "/etc/mailbridge/dkim-mailbridge.key": ("mailbridge-relay", "mailbridge-relay", "0600"),
    "/etc/systemd/system/mailbridge-relay.service": ("root", "root", "0644"),
    "/etc/systemd/system/mailbridge-purge@.service": ("root", "root", "0644"),
    "/etc/systemd/system/mailbridge-purge@.timer": ("root", "root", "0644"),
}


def test_the_relay_role_installs_its_user_folders_files_and_units(tmp_path: Path) -> None:
    root = a_debian_etc(tmp_path / "root")
    install(root, "relay")
    assert "mailbridge-relay" in ids(root, "passwd")
    assert "mailbridge-relay" in (root / "etc" / "group").read_text().split("mailbridge:")[1]
    for path, expected in RELAY.items():
        assert owner_and_mode(root, path) == expected, path
    for unit in ("mailbridge-relay.service", "mailbridge-purge@.service",
                 "mailbridge-purge@.timer"):
        assert ((root / "etc/systemd/system" / unit).read_bytes()
                == (ROOT / "systemd" / unit).read_bytes())
    etc = root / "etc" / "mailbridge"
    secret = dotenv_values(etc / "relay.env")["MAILBRIDGE_SECRET"]
    assert secret is not None and len(secret) >= 32
    assert txt_value((etc / "dkim-mailbridge.key").read_bytes()).startswith("v=DKIM1; k=rsa; p=")

    skeleton = tomllib.loads((etc / "relay.toml").read_text(encoding="utf-8"))
    assert "ledger" not in skeleton
    assert all("imap" not in station for station in skeleton["stations"])
    assert skeleton["relay"]["database"] == "sqlite:////var/lib/mailbridge-relay/relay.db"
    # Once the admin gives the SMTP password it names, the skeleton is a relay config.
    with (etc / "relay.env").open("a") as env:
        env.write("MAILBRIDGE_SMTP_PASSWORD=x\nMAILBRIDGE_PVS_SMTP_PASSWORD=x\n")
    settings = load_config(etc / "relay.toml", env={}, role="relay")
    assert settings.relay.secret.reveal() == secret  # from relay.env beside it


def test_a_second_run_changes_nothing_and_keeps_what_the_admin_wrote(tmp_path: Path) -> None:
    root = a_debian_etc(tmp_path / "root")
    install(root, "relay")
    etc = root / "etc" / "mailbridge"
    (etc / "relay.toml").write_text("# the admin's own\n", encoding="utf-8")
    before = {p: p.read_bytes() for p in etc.iterdir()}
    (etc / "relay.env").chmod(0o644)  # left readable by mistake
    out = install(root, "relay")
    assert all(line.startswith("kept") for line in out.splitlines()
               if not line.startswith(("next:", " "))), out
    assert {p: p.read_bytes() for p in etc.iterdir()} == before
    assert owner_and_mode(root, "/etc/mailbridge/relay.env")[2] == "0600"
    assert list(ids(root, "passwd")).count("mailbridge-relay") == 1

    out = install(root, "station")  # the other role beside it: its own user and files
    assert "kept          group mailbridge" in out
    assert owner_and_mode(root, "/etc/mailbridge/station.env") == (
        "mailbridge-station", "mailbridge-station", "0600")
    assert owner_and_mode(root, "/var/lib/mailbridge-station") == (
        "mailbridge-station", "mailbridge-station", "0700")
    station = tomllib.loads((etc / "station.toml").read_text(encoding="utf-8"))
    assert station["ledger"]["database"] == "sqlite:////var/lib/mailbridge-station/ledger.db"
    assert (root / "etc/systemd/system/mailbridge-poller.service").is_file()
    # Officers reach the ledger (the station user's alone) through sudo, for the
    # officers' UI and the report only.
    assert "mailbridge-officers" in ids(root, "group")
    rule = root / "etc/sudoers.d/mailbridge-officers"
    assert owner_and_mode(root, "/etc/sudoers.d/mailbridge-officers") == ("root", "root", "0440")
    if shutil.which("visudo"):
        check = subprocess.run(["visudo", "-cf", str(rule)], capture_output=True, text=True,
                               check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    allowed = rule.read_text().split("MAILBRIDGE_DESK = ")[1].splitlines()[0].split(", ")
    config = "--config /etc/mailbridge/station.toml"
    assert sorted({c.split(config)[1].split()[0] for c in allowed}) == ["ledger", "report"]
    assert all(c.startswith(f"/opt/mailbridge/bin/mailbridge {config} ") for c in allowed)
    for command in ("ledger", "report"):
        wrapper = f"/usr/local/bin/mailbridge-{command}"
        assert owner_and_mode(root, wrapper) == ("root", "root", "0755")
        assert f"sudo -u mailbridge-station /opt/mailbridge/bin/mailbridge {config} {command} " \
            in (root / wrapper.lstrip("/")).read_text()
    assert (etc / "relay.env").read_bytes() == before[etc / "relay.env"]


def test_a_dry_run_prints_the_steps_and_changes_nothing(tmp_path: Path) -> None:
    root = a_debian_etc(tmp_path / "root")
    accounts = {p.name: p.read_bytes() for p in (root / "etc").iterdir()}
    out = install(root, "relay", "--dry-run")
    assert "would create  user mailbridge-relay" in out
    assert "would create  /etc/mailbridge/relay.env 0600 mailbridge-relay:mailbridge-relay" in out
    assert "MAILBRIDGE_SECRET=" not in out
    assert {p.name: p.read_bytes() for p in (root / "etc").iterdir()} == accounts
    assert sorted(p.name for p in root.rglob("*")) == sorted([*accounts, "etc"])
