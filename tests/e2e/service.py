"""A relay started the way its systemd unit starts it, without systemd: the unit's own
ExecStartPre and ExecStart lines (this Python for /opt/mailbridge/bin/mailbridge), its
Environment= and EnvironmentFile= (no .env beside the config), WorkingDirectory= and
UMask=. Every absolute path the unit names must be given a stand-in, so a unit that
changes its paths or arguments changes what the tests run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from tests.e2e.support import ROOT, RelayProcess

RELAY_UNIT = ROOT / "systemd" / "mailbridge-relay.service"
BINARY = "/opt/mailbridge/bin/mailbridge"
_PATH = re.compile(r"/[\w./-]+")


@dataclass(frozen=True)
class ServiceStart:
    pre: tuple[tuple[str, ...], ...]
    command: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    umask: str

    def wrapped(self, command: tuple[str, ...]) -> list[str]:
        """``command`` under the unit's umask (what UMask= does for the service)."""
        return ["sh", "-c", f"umask {self.umask} && exec \"$@\"", "sh", *command]

    def run_pre(self) -> None:
        for command in self.pre:
            proc = subprocess.run(self.wrapped(command), env=dict(self.env), cwd=self.cwd,
                                  capture_output=True, text=True, timeout=120, check=False)
            assert proc.returncode == 0, f"{command}: {proc.stdout}{proc.stderr}"

    def relay(self, config: Path, port: int) -> RelayProcess:
        """The relay with stderr "connected to the journal": ``JOURNAL_STREAM`` names the
        file its stderr goes to, as systemd names the journal's stream."""
        stderr = config.parent / "serve.err"
        stderr.touch()
        info = stderr.stat()
        env = {**self.env, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        return RelayProcess(config, port, command=self.wrapped(self.command), env=env,
                            cwd=self.cwd)


def unit_start(unit: Path, paths: Mapping[str, Path]) -> ServiceStart:
    """Read ``unit``'s [Service] start lines; ``paths`` maps each absolute path it names
    (config, environment file, state folder) to the test's own."""
    service: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            service.setdefault(key, []).append(value)

    def local(value: str) -> str:
        def swap(match: re.Match[str]) -> str:
            path = match.group(0)
            if path == BINARY:
                return path
            assert path in paths, f"{unit.name} names {path}: give the test a stand-in"
            return str(paths[path])
        return _PATH.sub(swap, value)

    def command(line: str) -> tuple[str, ...]:
        argv = shlex.split(local(line))
        assert argv[0] == BINARY, line
        return (sys.executable, "-m", "mailbridge", *argv[1:])

    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBRIDGE")}
    for assignment in service.get("Environment", []):
        for item in shlex.split(local(assignment)):
            key, _, value = item.partition("=")
            env[key] = value
    for env_file in service.get("EnvironmentFile", []):
        values = dotenv_values(local(env_file).lstrip("-"))
        env.update({k: v for k, v in values.items() if v is not None})
    [cwd] = service["WorkingDirectory"]
    [umask] = service.get("UMask", ["0022"])
    [start] = service["ExecStart"]
    return ServiceStart(tuple(command(c) for c in service.get("ExecStartPre", [])),
                        command(start), env, Path(local(cwd)), umask)
