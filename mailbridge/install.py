"""``mailbridge install --role relay|station``: the system user, folders, a config
skeleton, the environment file with a new secret and the systemd units, on Debian.

What it does is a list of steps (``plan``), printed by ``--dry-run`` and applied by a
run; each step is idempotent: a second run changes nothing, and an existing config,
environment file or key is never overwritten (only its owner and mode are set, so a
secret left readable by others is narrowed). ``--root DIR`` installs under a prefix
(users in DIR/etc/passwd, through ``useradd --prefix``): how the tests check it.

The layout is the units' (systemd/): /etc/mailbridge (0750, group ``mailbridge``, which
both service users are in) holds ROLE.toml (0640, readable by the role's user) and
ROLE.env (0600, the role's user: systemd's EnvironmentFile, and what a command run by
hand as that user reads); /var/lib/mailbridge-ROLE (0700) holds the databases. The
relay's DKIM key is made here too, since the relay's user cannot write /etc/mailbridge.

The ledger stays the station user's alone (0600 in 0700): officers, in the group
``mailbridge-officers``, open it through a sudoers rule that allows exactly
``mailbridge ledger`` and ``mailbridge report`` as that user, wrapped as the commands
``mailbridge-ledger`` and ``mailbridge-report``; the audit names the officer who ran sudo.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ConfigError, RuntimeFailure

InstallRole = Literal["relay", "station"]
GROUP = "mailbridge"
ETC = Path("/etc/mailbridge")
UNITS = Path("/etc/systemd/system")
_UNIT = {"relay": "mailbridge-relay.service", "station": "mailbridge-poller.service"}
_PURGE = ("mailbridge-purge@.service", "mailbridge-purge@.timer")
OFFICERS = "mailbridge-officers"
MAILBRIDGE = "/opt/mailbridge/bin/mailbridge"  # where the units run it from
_DESK = ("ledger", "report")  # what officers may run as the station's user


@dataclass(frozen=True)
class Step:
    """A user, a folder or a file (``content`` gives its bytes; ``keep``: never replace
    an existing one), with owner and mode."""

    kind: Literal["group", "user", "dir", "file"]
    path: Path  # for a user, its home; for a group, unused
    name: str = ""  # user or group name
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    content: Callable[[], bytes] | None = None
    keep: bool = False
    note: str = ""


def source_dir(given: Path | None) -> Path:
    """The checkout that holds systemd/ and config/: ``--source``, else the one this
    package runs from, else the current folder."""
    candidates = [given] if given else [Path(__file__).resolve().parents[1], Path.cwd()]
    for folder in candidates:
        if folder and (folder / "systemd").is_dir() and (folder / "config").is_dir():
            return folder
    raise ConfigError(f"no systemd/ and config/ in {candidates[0]}: pass --source with the "
                      f"mailbridge source folder (the one pip installed from)")


def _without_tables(text: str, names: Sequence[str]) -> str:
    """``text`` without the TOML tables ``names``: a header up to the next header, and
    the comment lines just above it, which are about it."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        header = re.match(r"^\[\[?([^\]]+)\]\]?\s*(#.*)?$", line.strip())
        if header:
            skipping = header.group(1).strip() in names
            while skipping and out and out[-1].startswith("#"):
                out.pop()
        if not skipping:
            out.append(line)
    return "".join(out)


def config_skeleton(role: InstallRole, source: Path) -> str:
    """The example config for ``role``, its databases and files in the state folder
    (the unit's system is read-only beside the config)."""
    state = f"/var/lib/mailbridge-{role}"
    head = (f"# /etc/mailbridge/{role}.toml, written by `mailbridge install --role {role}`"
            f" from config/.\n# Edit it, then `mailbridge --config /etc/mailbridge/{role}.toml"
            f" check`.\n")
    if role == "relay":
        text = _without_tables((source / "config" / "mailbridge.example.toml")
                               .read_text(encoding="utf-8"), ("ledger", "stations.imap"))
        text = text.replace('database = "sqlite:///relay.db"',
                            f'database = "sqlite:///{state}/relay.db"')
    else:
        text = (source / "config" / "station.example.toml").read_text(encoding="utf-8")
        text = text.replace('database = "sqlite:///ledger.db"',
                            f'database = "sqlite:///{state}/ledger.db"')
        text = text.replace('attachments_dir = "attachments"',
                            f'attachments_dir = "{state}/attachments"')
    return head + text


def env_file(role: InstallRole) -> bytes:
    if role == "relay":
        return (f"# Secrets of /etc/mailbridge/relay.toml (its *_env keys); mode 0600.\n"
                f"# The installation secret: keep it out of backups of the database.\n"
                f"MAILBRIDGE_SECRET={secrets.token_urlsafe(32)}\n"
                f"MAILBRIDGE_SMTP_PASSWORD=\n").encode()
    return (b"# Secrets of /etc/mailbridge/station.toml (its *_env keys); mode 0600.\n"
            b"MAILBRIDGE_NCS_IMAP_PASSWORD=\n")


def _station_command(command: str) -> str:
    return f"{MAILBRIDGE} --config {ETC}/station.toml {command}"


def sudoers() -> bytes:
    """The rule that lets officers run the officers' UI and the report, nothing else."""
    allowed = ", ".join(f"{_station_command(c)}, {_station_command(c)} *" for c in _DESK)
    return (f"# Written by `mailbridge install --role station`: officers (group {OFFICERS})"
            f" open\n# the ledger as mailbridge-station, which alone can read it.\n"
            f"Cmnd_Alias MAILBRIDGE_DESK = {allowed}\n"
            f"%{OFFICERS} ALL=(mailbridge-station) NOPASSWD: MAILBRIDGE_DESK\n").encode()


def desk_wrapper(command: str) -> bytes:
    return (f"#!/bin/sh\n# mailbridge-{command}: `mailbridge {command}` as the station's user"
            f" (sudoers.d/{OFFICERS}).\n"
            f'exec sudo -u mailbridge-station {_station_command(command)} "$@"\n').encode()


def plan(role: InstallRole, source: Path) -> list[Step]:
    user = f"mailbridge-{role}"
    state = Path(f"/var/lib/{user}")
    steps = [
        Step("group", Path("/"), GROUP),
        Step("user", state, user),
        Step("dir", ETC, mode=0o750, group=GROUP),
        Step("dir", state, mode=0o700, owner=user, group=user),
        Step("file", ETC / f"{role}.toml", mode=0o640, group=user, keep=True,
             content=lambda: config_skeleton(role, source).encode()),
        Step("file", ETC / f"{role}.env", mode=0o600, owner=user, group=user, keep=True,
             content=lambda: env_file(role),
             note="a new MAILBRIDGE_SECRET" if role == "relay" else "IMAP passwords"),
    ]
    if role == "relay":
        from .relay.dkim import generate_key

        steps.append(Step("file", ETC / "dkim-mailbridge.key", mode=0o600, owner=user,
                          group=user, keep=True, content=generate_key, note="a new DKIM key"))
    else:
        steps.append(Step("group", Path("/"), OFFICERS))
        steps.append(Step("file", Path("/etc/sudoers.d") / OFFICERS, mode=0o440,
                          content=sudoers))
        steps += [Step("file", Path(f"/usr/local/bin/mailbridge-{c}"), mode=0o755,
                       content=functools.partial(desk_wrapper, c)) for c in _DESK]
    for unit in (_UNIT[role], *_PURGE):
        steps.append(Step("file", UNITS / unit,
                          content=functools.partial(Path.read_bytes, source / "systemd" / unit)))
    return steps


class _Ids:
    """User and group ids as the target system has them (``root``/etc/passwd)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _table(self, name: str) -> dict[str, int]:
        try:
            lines = (self.root / "etc" / name).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return {}
        return {f[0]: int(f[2]) for f in (line.split(":") for line in lines) if len(f) > 2}

    def uid(self, name: str) -> int | None:
        return self._table("passwd").get(name)

    def gid(self, name: str) -> int | None:
        return self._table("group").get(name)


class Installer:
    def __init__(self, root: Path, *, dry_run: bool, out: Callable[[str], None] = print) -> None:
        self.root = root
        self.dry_run = dry_run
        self.out = out
        self.ids = _Ids(root)

    def target(self, path: Path) -> Path:
        return self.root / path.relative_to("/")

    def say(self, done: Literal["created", "updated", "kept"], what: str) -> None:
        if self.dry_run and done != "kept":
            done_text = {"created": "would create", "updated": "would update"}[done]
        else:
            done_text = done
        self.out(f"{done_text:<13} {what}")

    def apply(self, step: Step) -> None:
        if step.kind == "group":
            self._account(step, self.ids.gid(step.name) is not None,
                          ["groupadd", "--system", step.name])
        elif step.kind == "user":
            self._account(step, self.ids.uid(step.name) is not None,
                          ["useradd", "--system", "--user-group", "--groups", GROUP,
                           "--home-dir", str(step.path), "--no-create-home",
                           "--shell", "/usr/sbin/nologin", step.name])
        elif step.kind == "dir":
            path = self.target(step.path)
            self.say("kept" if path.is_dir() else "created", self._describe(step))
            if not self.dry_run:
                path.mkdir(parents=True, exist_ok=True)
                self._own(path, step)
        else:
            self._file(step)

    def _account(self, step: Step, exists: bool, command: list[str]) -> None:
        self.say("kept" if exists else "created", f"{step.kind} {step.name}")
        if exists or self.dry_run:
            return
        if self.root != Path("/"):
            command[1:1] = ["--prefix", str(self.root)]
        proc = subprocess.run(command, capture_output=True, text=True,  # noqa: S603
                              check=False)
        if proc.returncode != 0:
            raise RuntimeFailure(f"{' '.join(command)} failed: {proc.stderr.strip()}")

    def _file(self, step: Step) -> None:
        assert step.content is not None
        path = self.target(step.path)
        exists = path.exists()
        if exists and step.keep:
            self._kept(path, step, " (never overwritten)")
            return
        note = f" ({step.note})" if step.note else ""
        if not exists and self.dry_run:  # no secret or key is made for a dry run
            self.say("created", self._describe(step) + note)
            return
        data = step.content()
        if exists and path.read_bytes() == data:
            self._kept(path, step, "")
            return
        self.say("updated" if exists else "created", self._describe(step) + note)
        if not self.dry_run:
            self._write(path, data, step)

    def _kept(self, path: Path, step: Step, why: str) -> None:
        self.say("kept", self._describe(step) + why)
        if not self.dry_run:
            self._own(path, step)

    def _write(self, path: Path, data: bytes, step: Step) -> None:
        """A new file beside the old one, owned and narrowed, then renamed over it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        self._own(tmp, step)
        os.replace(tmp, path)

    def _own(self, path: Path, step: Step) -> None:
        """Owner first, then mode: a secret is never readable by the wrong user."""
        uid, gid = self.ids.uid(step.owner), self.ids.gid(step.group)
        if uid is None or gid is None:
            raise RuntimeFailure(f"{step.owner}:{step.group} is not in {self.root}/etc: "
                                 f"run `mailbridge install` again as root")
        os.chown(path, uid, gid)
        os.chmod(path, step.mode)

    @staticmethod
    def _describe(step: Step) -> str:
        return f"{step.path} {step.mode:04o} {step.owner}:{step.group}"


def run_install(role: InstallRole, *, root: Path, dry_run: bool, source: Path | None) -> int:
    """``mailbridge install``: one line per step, then what the admin does next."""
    if not dry_run and os.geteuid() != 0:
        raise ConfigError("mailbridge install creates users and sets owners: run it as root "
                          "(sudo), or add --dry-run to see what it would do")
    installer = Installer(root.resolve(), dry_run=dry_run)
    for step in plan(role, source_dir(source)):
        installer.apply(step)
    if root == Path("/") and not dry_run and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], check=False)  # noqa: S607
    unit = _UNIT[role].removesuffix(".service")
    config = f"/etc/mailbridge/{role}.toml"
    print(f"next: edit {config} and /etc/mailbridge/{role}.env, then\n"
          f"  sudo -u mailbridge-{role} /opt/mailbridge/bin/mailbridge --config {config} "
          f"check --connect\n"
          + (f"  sudo -u mailbridge-relay /opt/mailbridge/bin/mailbridge --config {config} "
             f"dkim-key   # the DNS record to publish\n" if role == "relay" else "")
          + f"  sudo systemctl enable --now {unit} mailbridge-purge@{role}.timer"
          + ("\n  then HTTPS in front: deploy/nginx/mailbridge.conf or deploy/caddy/Caddyfile"
             " (docs/ADMIN.md, TLS in front)" if role == "relay" else
             f"\n  each officer: sudo adduser ACCOUNT {OFFICERS}, listed in stations.<id>."
             f"officers;\n  then they run mailbridge-ledger and mailbridge-report"))
    return 0
