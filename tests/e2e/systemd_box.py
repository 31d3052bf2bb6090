"""A real systemd as PID 1 of new PID, mount, UTS, IPC and cgroup namespaces: a box the
shipped units can be installed into and started in, without touching the host.

Inside the box /etc, /var and /usr/local are overlays whose writes land in the test's
folder (the users `mailbridge install` adds, /etc/mailbridge, the state folders);
/etc/systemd/system is a folder of the test's own, without the host's enabled services
and with every unit the distribution's targets pull in masked but the journal's, and an
empty fstab, so a unit's default dependencies start nothing that acts on the shared kernel
(udev, sysctl, binfmt, remounts, swap, tmpfiles' clean-up). /run, /tmp, /dev (the host's
null, zero, full, random, urandom and tty, a new devpts) and /opt are new, /proc/sys and
/sys read-only, and each cgroup hierarchy systemd uses gets a new cgroup under ours, which
the box sees as its root. The network is the host's: the relay's port answers on loopback.

/opt/mailbridge is a venv of the system's Python 3 over this checkout's packages, as
docs/ADMIN.md's `python3 -m venv /opt/mailbridge` makes it: the checkout's own venv
interpreter may live under /root, which the units' ProtectHome= hides. The checkout and
its venv's packages are bound read-only into it (``CHECKOUT``, ``SITE``), since where
they are (under /tmp, /root or /home) the box's new /tmp or the units' ProtectHome= and
PrivateTmp= would hide them.

Killing PID 1 ends everything in the box (`unshare --kill-child` does it if the test
process goes first); the mounts go with the mount namespace.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.waiting import wait_for

SYSTEMD = Path("/lib/systemd/system")
SYSTEMD_BINARY = Path("/lib/systemd/systemd")
CGROUP = Path("/sys/fs/cgroup")
PYTHON = Path(f"/usr/bin/python3.{sys.version_info.minor}")
MAILBRIDGE = "/opt/mailbridge/bin/mailbridge"
CHECKOUT = "/opt/mailbridge/checkout"  # this checkout, as the box sees it
SITE = "/opt/mailbridge/checkout-site"  # its venv's packages, as the box sees them
ROOT = Path(__file__).resolve().parents[2]
TARGET = "mailbridge-test.target"
PR_SET_PDEATHSIG = 1
_KEPT = {"systemd-journald.service", "systemd-journald.socket"}
_MASKED = {"systemd-remount-fs.service"}  # local-fs.target's, not in a .wants folder
_V1 = {"cpu", "cpuacct", "blkio", "memory", "devices", "pids", "name=systemd"}
_MOUNT_FLAGS = {"rw", "ro", "nosuid", "nodev", "noexec", "relatime", "noatime", "none"}


@dataclass(frozen=True)
class Hierarchy:
    """A cgroup hierarchy the box mounts, and our own cgroup's folder in it."""

    mountpoint: Path
    fstype: str  # "cgroup" or "cgroup2"
    options: str  # "memory", "none,name=systemd"; "" for cgroup2
    folder: Path


def _hierarchies() -> list[Hierarchy]:
    ours: dict[frozenset[str], str] = {}
    for line in Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines():
        _, names, path = line.split(":", 2)
        ours[frozenset(names.split(",")) - {""}] = path
    found = []
    for line in Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines():
        _, mountpoint, fstype, options, *_ = line.split()
        if fstype not in ("cgroup", "cgroup2") or Path(mountpoint).parent != CGROUP:
            continue
        controllers = frozenset(options.split(",")) - _MOUNT_FLAGS
        if fstype == "cgroup" and not controllers <= _V1:
            continue  # cpuset, freezer, ...: systemd's hybrid mode leaves them alone
        v1 = fstype == "cgroup"
        path = ours[controllers if v1 else frozenset()]
        given = ",".join(sorted(controllers)).replace("name=", "none,name=") if v1 else ""
        found.append(Hierarchy(Path(mountpoint), fstype, given,
                               Path(mountpoint) / path.lstrip("/")))
    return found


def why_not() -> str | None:
    """Why a box cannot be made here, or None."""
    if os.geteuid() != 0:
        return "booting systemd in namespaces needs root"
    for tool in ("unshare", "nsenter", "systemctl", "journalctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not SYSTEMD_BINARY.exists():
        return f"{SYSTEMD_BINARY} is missing: apt-get install systemd"
    if not PYTHON.exists():
        return f"{PYTHON} is missing: the box's /opt/mailbridge venv needs the system's Python"
    kinds = {h.mountpoint.name: h.fstype for h in _hierarchies()}
    if kinds.get("systemd") != "cgroup" or kinds.get("unified") != "cgroup2":
        return (f"needs the hybrid cgroup layout (tmpfs {CGROUP} with name=systemd and "
                f"cgroup2 at unified); this host has {kinds or 'cgroup2 alone'}")
    return None


def _units(folder: Path) -> None:
    """The box's /etc/systemd/system: the test target, and a mask for every unit the
    distribution's targets want but the journal's."""
    folder.mkdir()
    wanted = {unit.name for wants in SYSTEMD.glob("*.wants") for unit in wants.iterdir()}
    for name in (wanted - _KEPT) | _MASKED:
        (folder / name).symlink_to("/dev/null")
    (folder / TARGET).write_text("[Unit]\nDescription=mailbridge test box\n"
                                 "Wants=systemd-journald.socket systemd-journald.service\n",
                                 encoding="utf-8")


def _venv(folder: Path) -> None:
    """/opt/mailbridge: the system's Python, this checkout's packages, the console script."""
    subprocess.run([str(PYTHON), "-m", "venv", "--without-pip", str(folder)], check=True,
                   capture_output=True, timeout=60)
    site = next((folder / "lib").glob("python3.*")) / "site-packages"
    # The checkout first: its venv's editable install points at the checkout's real path.
    (site / "mailbridge-checkout.pth").write_text(
        f"{CHECKOUT}\nimport site; site.addsitedir({SITE!r})\n", encoding="utf-8")
    for name in ("checkout", "checkout-site"):
        (folder / name).mkdir()
    script = folder / "bin" / "mailbridge"
    script.write_text(f"#!{Path(MAILBRIDGE).parent}/python3\nimport sys\n"
                      f"from mailbridge.cli import main\nsys.exit(main())\n", encoding="utf-8")
    script.chmod(0o755)


_BOOT = """set -eu
T={folder}
for d in etc var usrlocal; do mkdir -p $T/$d.upper $T/$d.work; done
mount -t overlay overlay -o lowerdir=/etc,upperdir=$T/etc.upper,workdir=$T/etc.work /etc
mount -t overlay overlay -o lowerdir=/var,upperdir=$T/var.upper,workdir=$T/var.work /var
mount -t overlay overlay \
  -o lowerdir=/usr/local,upperdir=$T/usrlocal.upper,workdir=$T/usrlocal.work /usr/local
mount --bind $T/units /etc/systemd/system
: > /etc/fstab; : > /etc/crypttab  # no mount, swap or disk of the host's for the generators
mount -t tmpfs -o mode=755 tmpfs /opt
mkdir /opt/mailbridge
mount --bind $T/opt /opt/mailbridge
mount --bind {checkout} {checkout_in_box}; mount -o remount,bind,ro {checkout_in_box}
mount --bind {site} {site_in_box}; mount -o remount,bind,ro {site_in_box}
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mkdir $T/dev
mount -t tmpfs -o mode=755,nosuid tmpfs $T/dev
for n in null zero full random urandom tty; do
  touch $T/dev/$n; mount --bind /dev/$n $T/dev/$n
done
touch $T/dev/console; mount --bind $T/console.log $T/dev/console
mkdir $T/dev/pts $T/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts $T/dev/pts
ln -s pts/ptmx $T/dev/ptmx; ln -s /proc/self/fd $T/dev/fd
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $T/dev/shm
mount --move $T/dev /dev
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount --bind /proc/sys /proc/sys; mount -o remount,bind,ro /proc/sys
mount -t tmpfs -o mode=755 tmpfs {cgroup}
{cgroups}
mount -o remount,bind,ro {cgroup}
mount -o remount,bind,ro /sys
exec env -i container=mailbridge-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  {systemd} --system --unit={target}
"""


def _boot_script(folder: Path, hierarchies: list[Hierarchy]) -> str:
    lines = []
    for h in hierarchies:
        options = f" -o {h.options}" if h.options else ""
        lines.append(f"mkdir {h.mountpoint}; mount -t {h.fstype}{options} {h.fstype} "
                     f"{h.mountpoint}")
    return _BOOT.format(folder=shlex.quote(str(folder)), cgroup=CGROUP,
                        checkout=shlex.quote(str(ROOT)), checkout_in_box=CHECKOUT,
                        site=shlex.quote(sysconfig.get_paths()["purelib"]), site_in_box=SITE,
                        cgroups="\n".join(lines), systemd=SYSTEMD_BINARY, target=TARGET)


@dataclass(frozen=True)
class Box:
    """A booted box: commands run in all its namespaces; its files read from here."""

    pid: int  # PID 1 of the box, as the host numbers it
    folder: Path

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(self.pid), "-a", *argv],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def path(self, path: str) -> Path:
        """A file of the box, as its mount namespace shows it."""
        return Path(f"/proc/{self.pid}/root") / path.lstrip("/")

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        proc = self.run("systemctl", "show", unit, "-p", ",".join(properties))
        assert proc.returncode == 0, proc.stderr
        return dict(line.split("=", 1) for line in proc.stdout.splitlines())

    def journal(self, *args: str) -> str:
        """The box's journal since its boot, message text only."""
        return self.run("journalctl", "-b", "-o", "cat", "--no-pager", *args).stdout

    def running(self) -> bool:
        return self.run("systemctl", "is-system-running", timeout=10).stdout.strip() in (
            "running", "degraded")


def _child(unshare: subprocess.Popen[bytes]) -> int | None:
    """unshare's forked child, the box's PID 1 (first the boot script, then systemd)."""
    try:
        children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text()
    except FileNotFoundError:
        return None
    return int(children.split()[0]) if children.split() else None


class CannotBoot(RuntimeError):
    """The box's systemd did not come up: this host cannot run the test (the message has
    the box's own lines). The units are started only after, so this never hides theirs."""


def _booted(unshare: subprocess.Popen[bytes], folder: Path) -> Box:
    def lines() -> str:
        return "".join((folder / name).read_text(errors="replace")
                       for name in ("unshare.log", "console.log"))[-2000:]

    def systemd_is_pid1() -> bool:
        if unshare.poll() is not None:
            raise CannotBoot(f"the box ended ({unshare.returncode}): {lines()}")
        pid = _child(unshare)
        return pid is not None and Path(f"/proc/{pid}/comm").read_text().strip() == "systemd"

    try:
        wait_for(systemd_is_pid1, "the box's PID 1 to be systemd", timeout=30)
        box = Box(_child(unshare) or 0, folder)
        wait_for(lambda: systemd_is_pid1() and box.running(), "the box's systemd to boot",
                 timeout=30, interval=0.2)
    except AssertionError as exc:  # wait_for's deadline
        state = Box(_child(unshare) or 0, folder).run("systemctl", "list-jobs", timeout=10)
        raise CannotBoot(f"{exc}: {lines()}{state.stdout}{state.stderr}") from exc
    return box


def _remove(hierarchy: Hierarchy) -> bool:
    """Our cgroup and the ones the box's systemd made in it, once their processes are gone."""
    if not hierarchy.folder.exists():
        return True
    folders = sorted((p for p in hierarchy.folder.rglob("*") if p.is_dir()),
                     key=lambda p: len(p.parts), reverse=True)
    try:
        for folder in [*folders, hierarchy.folder]:
            folder.rmdir()
    except OSError:  # EBUSY while the last processes exit
        return False
    return True


def _stale(mountpoint: Path) -> Iterator[Hierarchy]:
    """Cgroups of boxes whose test process was killed before it could remove them."""
    for folder in mountpoint.rglob("mailbridge-test-*"):
        if not Path(f"/proc/{folder.name.rsplit('-', 1)[1]}").exists():
            yield Hierarchy(mountpoint, "", "", folder)


def _start(folder: Path, hierarchies: list[Hierarchy]) -> subprocess.Popen[bytes]:
    libc = ctypes.CDLL(None, use_errno=True)

    def in_the_child() -> None:  # after fork, before unshare runs
        for h in hierarchies:
            (h.folder / "cgroup.procs").write_text(str(os.getpid()))
        # unshare dies with the test process, and the box with unshare (--kill-child).
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")

    with (folder / "unshare.log").open("wb") as log:
        return subprocess.Popen(
            ["unshare", "--pid", "--kill-child=SIGKILL", "--mount", "--uts", "--ipc",
             "--cgroup", "--propagation", "private", "--mount-proc",
             "sh", str(folder / "boot.sh")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=in_the_child)


@contextmanager
def booted_systemd(folder: Path) -> Iterator[Box]:
    """A box booted to its test target; killed, whatever happens, on the way out."""
    folder.mkdir(parents=True)
    _units(folder / "units")
    _venv(folder / "opt")
    (folder / "console.log").touch()
    name = f"mailbridge-test-{os.getpid()}"
    hierarchies = [Hierarchy(h.mountpoint, h.fstype, h.options, h.folder / name)
                   for h in _hierarchies()]
    for stale in (s for h in hierarchies for s in _stale(h.mountpoint)):
        _remove(stale)
    (folder / "boot.sh").write_text(_boot_script(folder, hierarchies), encoding="utf-8")
    unshare: subprocess.Popen[bytes] | None = None
    try:
        for h in hierarchies:
            h.folder.mkdir()
        unshare = _start(folder, hierarchies)
        yield _booted(unshare, folder)
    finally:
        if unshare is not None:
            pid = _child(unshare) if unshare.poll() is None else None
            if pid is not None:
                os.kill(pid, signal.SIGKILL)  # the whole PID namespace goes with it
            unshare.kill()
            unshare.wait(timeout=30)
        wait_for(lambda: all(_remove(h) for h in hierarchies), "the box's cgroups to empty",
                 timeout=30)
