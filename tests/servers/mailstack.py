"""A throw-away Postfix + Dovecot mail stack on 127.0.0.1, for tests and benchmarks.

Everything lives under one directory (configs, queue, maildirs, logs, TLS files), so
several stacks can run side by side and none touches /etc/postfix or /etc/dovecot.
Postfix (SMTP, STARTTLS optional, AUTH through Dovecot SASL) accepts mail only for
the configured virtual domains and hands it to Dovecot over LMTP; Dovecot serves IMAP
and IMAPS from Maildir. Nothing relays. Needs root (Debian: apt, useradd, runuser).

Manual use:  python -m tests.servers.mailstack start DIR   (prints a KEY=VALUE env)
             python -m tests.servers.mailstack stop DIR
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import hashlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from string import Template
from typing import Any

from imapclient import IMAPClient

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REQUIRED_BINARIES = (
    "/usr/sbin/dovecot",
    "/usr/bin/doveadm",
    "/usr/lib/dovecot/imap",
    "/usr/lib/dovecot/lmtp",
    "/usr/sbin/postfix",
    "/usr/lib/postfix/sbin/master",
)
DOVECOT_DH = Path("/usr/share/dovecot/dh.pem")
SHORT_ROOT_LIMIT = 60  # longer DIRs overflow the 107-byte unix socket path limit
DEFAULT_DOMAINS = ("example.test",)


def free_ports(count: int) -> list[int]:
    """Ephemeral ports the kernel considers free now (all held at once: no duplicates)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def run_cmd(
    args: Sequence[str | os.PathLike[str]], **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """subprocess.run with a sane PATH (sbin dirs) and text output; check=True by default."""
    env = dict(os.environ, PATH=SYSTEM_PATH + ":" + os.environ.get("PATH", ""))
    kwargs.setdefault("check", True)
    return subprocess.run([os.fspath(a) for a in args], env=env, text=True, **kwargs)


def tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


MISSING_HINT = "run `make test` (as root it installs them) or `sudo bash scripts/system-packages`"


def make_traversable(path: Path, users: Iterable[str]) -> None:
    """chmod 0755 PATH and add o+x to its parents, then check each user can enter it.

    Postfix, Dovecot and vmail processes open files under PATH as their own users;
    pytest's tmp dirs and mktemp -d are 0700, which they cannot traverse.
    """
    path.chmod(0o755)
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    for user in users:
        if run_cmd(["runuser", "-u", user, "--", "test", "-x", path], check=False).returncode:
            raise RuntimeError(f"user {user} cannot traverse {path}; check its parents' modes")


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """The system user (e.g. vmail) that owns every mailbox; created if missing."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    proc = run_cmd(["useradd", "--system", "--user-group", "--home-dir", "/nonexistent",
                 "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                check=False, capture_output=True)
    try:
        return pwd.getpwnam(name)  # a parallel process may have won the race
    except KeyError:
        raise RuntimeError(f"useradd {name} failed: {proc.stderr}") from None


def _live_pid(pid_file: Path, exe_names: set[str]) -> int | None:
    """The pid in PID_FILE if it is a live process running one of EXE_NAMES, else None.

    Pid files outlive crashes and pids get reused, so the executable is checked.
    """
    try:
        pid = int(pid_file.read_text().strip())
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except (OSError, ValueError):
        return None
    if os.path.basename(exe) not in exe_names or _proc_state(pid) in (None, "Z"):
        return None
    return pid


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _proc_state(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[0] if fields else None


def _session_alive(leader: int) -> list[int]:
    """Live (not zombie) processes of the master's session, the master included.

    PID 1 here reaps orphans late: a dead master stays a zombie for seconds, so
    waiting for /proc/PID to vanish would wait far too long.
    """
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _proc_stat(int(entry))
        if fields and fields[0] != "Z" and (int(entry) == leader or fields[3] == str(leader)):
            alive.append(int(entry))
    return alive


def _terminate(pids: Iterable[int], timeout: float = 15.0) -> None:
    """SIGTERM daemon masters and wait until they and their children are gone.

    All are signalled first: each master can take ~1 s to exit, so they wait in parallel.
    """
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive := [p for pid in pids for p in _session_alive(pid)]:
        if time.monotonic() > deadline:
            for child in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            break
        time.sleep(0.02)


def _listening_ports() -> set[int]:
    """TCP ports in LISTEN state on 127.0.0.1 or 0.0.0.0, from /proc/net/tcp."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, port = local.split(":")
        if state == "0A" and addr in ("0100007F", "00000000"):
            ports.add(int(port, 16))
    return ports


def _wait_exited(pids: set[int], timeout: float = 5.0) -> None:
    """Wait until PIDS are gone or zombies (a busy Postfix child may take up to TIMEOUT)."""
    deadline = time.monotonic() + timeout
    while any(_proc_state(pid) not in (None, "Z") for pid in pids):
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def _wait_listening(ports: Iterable[int], timeout: float = 15.0) -> None:
    """Wait until all PORTS listen, without connecting.

    A probe connection would make Dovecot fork a login/lmtp process; one still starting
    when stop() comes waits 5 s for the stats socket before it exits.
    """
    deadline = time.monotonic() + timeout
    while missing := set(ports) - _listening_ports():
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1 port(s) {sorted(missing)}")
        time.sleep(0.02)


DOVECOT_CONF = Template("""\
# Generated by tests/servers/mailstack.py; rewritten on every start.
instance_name = $instance
base_dir = $base_dir
state_dir = $root/lib/dovecot
log_path = $root/log/dovecot.log
info_log_path = $root/log/dovecot.log
debug_log_path = $root/log/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = yes
ssl_cert = <$root/ssl/cert.pem
ssl_key = <$root/ssl/key.pem
ssl_dh = <$root/ssl/dh.pem
disable_plaintext_auth = no
auth_mechanisms = plain login$oauth2_mechanisms
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu $root/users
  mechanisms = plain login
}
${oauth2_passdb}userdb {
  driver = passwd-file
  args = username_format=%Lu $root/users
  default_fields = uid=vmail gid=vmail home=$root/mail/%Ld/%Ln
}
mail_uid = vmail
mail_gid = vmail
first_valid_uid = $vmail_uid
last_valid_uid = $vmail_uid
mail_location = maildir:~/Maildir
protocol imap {
  mail_max_userip_connections = 1000
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap_port
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $imaps_port
    ssl = yes
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
  inet_listener lmtp {
    address = 127.0.0.1
    port = $lmtp_port
  }
}
service auth {
  unix_listener auth-postfix {
    mode = 0660
    user = postfix
    group = postfix
  }
}
""")

# With MailStack(oauth2_introspection_url=...): XOAUTH2 and OAUTHBEARER for IMAP and, through
# Postfix's Dovecot SASL, for SMTP. Dovecot POSTs each access token to the URL (as a
# provider's token check does) and takes it when the answer says active and names the user.
DOVECOT_OAUTH2_PASSDB = """\
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $root/dovecot-oauth2.conf.ext
}
"""
DOVECOT_OAUTH2_EXT = Template("""\
introspection_mode = post
introspection_url = $url
username_attribute = username
active_attribute = active
active_value = true
""")

POSTFIX_MAIN_CF = Template("""\
# Generated by tests/servers/mailstack.py; rewritten on every start.
compatibility_level = 3.6
queue_directory = $root/spool/postfix
data_directory = $root/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mailstack.example.test
myorigin = $$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
biff = no
virtual_mailbox_domains = texthash:$root/postfix/vdomains
virtual_mailbox_maps = texthash:$root/postfix/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:$lmtp_port
relayhost =
default_transport = error:mailstack relays nothing
relay_transport = error:mailstack relays nothing
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = reject_unauth_destination
smtp_dns_support_level = disabled
maillog_file = $root/log/postfix.log
maillog_file_prefixes = $root/log
smtpd_tls_security_level = may
smtpd_tls_cert_file = $root/ssl/cert.pem
smtpd_tls_key_file = $root/ssl/key.pem
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $base_dir/auth-postfix
""")

# Debian's stock services, with "n" in the chroot column: nothing gets copied into
# a jail when Postfix is started with -c, so chrooted daemons would break.
POSTFIX_MASTER_CF = Template("""\
# Generated by tests/servers/mailstack.py; rewritten on every start.
127.0.0.1:$smtp_port inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
proxywrite unix - - n -     1 proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
local     unix  - n n -     - local
virtual   unix  - n n -     - virtual
lmtp      unix  - - n -     - lmtp
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
""")


class MailStack:
    """Postfix + Dovecot whose files all live under ROOT, listening on 127.0.0.1 only."""

    host = "127.0.0.1"

    def __init__(
        self,
        root: Path,
        *,
        imap_port: int | None = None,
        imaps_port: int | None = None,
        smtp_port: int | None = None,
        lmtp_port: int | None = None,
        domains: Sequence[str] = DEFAULT_DOMAINS,
        oauth2_introspection_url: str | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.oauth2_introspection_url = oauth2_introspection_url
        free = iter(free_ports(4))
        self.imap_port = imap_port or next(free)
        self.imaps_port = imaps_port or next(free)
        self.smtp_port = smtp_port or next(free)
        self.lmtp_port = lmtp_port or next(free)
        self.domains = tuple(d.lower() for d in domains)
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:10]
        self.instance = f"mailstack-{digest}"
        # Unix sockets live in Dovecot's base_dir and Postfix's queue: keep them short.
        long_root = len(str(self.root)) > SHORT_ROOT_LIMIT
        self._short = Path("/tmp") / self.instance if long_root else None
        self.base_dir = self._short / "dovecot" if self._short else self.root / "run" / "dovecot"
        self._postfix_root = self._short / "root" if self._short else self.root
        self.conf = self.root / "dovecot.conf"
        self.postfix_dir = self.root / "postfix"
        self.users_file = self.root / "users"
        self.ca_file = self.root / "ssl" / "cert.pem"
        self.env_file = self.root / "mailstack.env"

    # -- installation -------------------------------------------------------------

    @staticmethod
    def install() -> None:
        """Check that Postfix and Dovecot are installed (scripts/system-packages installs them)."""
        missing = [b for b in REQUIRED_BINARIES if not Path(b).exists()]
        if missing:
            raise RuntimeError(f"Postfix/Dovecot are not installed ({missing[0]} is missing): "
                               f"{MISSING_HINT}")

    # -- users ----------------------------------------------------------------------

    def users(self) -> list[str]:
        """Addresses in the passwd-file, in file order."""
        if not self.users_file.exists():
            return []
        return [line.split(":", 1)[0] for line in self.users_file.read_text().splitlines() if line]

    def add_user(self, address: str, password: str) -> None:
        """Add (or re-password) a mailbox; its domain becomes a virtual domain.

        On a running stack it returns once both daemons see the change. Postfix reads
        texthash tables once per process: reload, then wait for the old processes to
        exit. Dovecot stats the passwd-file at most once per second and compares mtime
        (whole seconds) and size: bump the mtime if neither changed, then wait for the
        next second.
        """
        address = address.lower()
        if ":" in address or ":" in password or "\n" in address + password:
            raise ValueError("':' and newlines cannot appear in a passwd-file entry")
        self.root.mkdir(parents=True, exist_ok=True)
        old = self.users_file.stat() if self.users_file.exists() else None
        lines = [ln for ln in (self.users_file.read_text().splitlines() if old else [])
                 if ln and ln.split(":", 1)[0] != address]
        lines.append(f"{address}:{{PLAIN}}{password}::::::")
        self._write_users(lines)
        written = time.time()
        new = self.users_file.stat()
        if old and (int(old.st_mtime), old.st_size) == (int(new.st_mtime), new.st_size):
            os.utime(self.users_file, (old.st_mtime + 1, old.st_mtime + 1))
        if (self.postfix_dir / "main.cf").exists():
            self._write_postfix_tables()
        postfix = self._postfix_pid()
        if postfix is not None:
            old_children = set(_session_alive(postfix)) - {postfix}
            self._postfix("reload")
            _wait_exited(old_children)
        if self._dovecot_pid() is not None:
            time.sleep(max(0.0, written // 1 + 1.01 - time.time()))

    def _write_users(self, lines: list[str]) -> None:
        tmp = self.users_file.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        # Dovecot's auth process (user dovecot) reads the file itself.
        os.chown(tmp, 0, grp.getgrnam("dovecot").gr_gid)
        tmp.chmod(0o640)
        tmp.replace(self.users_file)

    def maildir(self, address: str) -> Path:
        """The Maildir Dovecot uses for ADDRESS (exists after the first delivery/login)."""
        local, domain = address.lower().rsplit("@", 1)
        return self.root / "mail" / domain / local / "Maildir"

    def doveadm(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run doveadm against this instance, e.g. doveadm("expunge", "-u", a, ...)."""
        return run_cmd(["doveadm", "-c", self.conf, *args], capture_output=True)

    def expunge_all(self, address: str) -> None:
        """Empty every folder of ADDRESS (test isolation on a session-wide stack)."""
        self.doveadm("expunge", "-u", address.lower(), "mailbox", "*", "all")

    # -- clients ----------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly this stack's self-signed certificate."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def imap_client(
        self, address: str, password: str, ssl: bool = False, timeout: float = 10.0
    ) -> IMAPClient:
        """A logged-in IMAPClient (IMAPS verified against ca_file when ssl=True)."""
        port = self.imaps_port if ssl else self.imap_port
        context = self.ssl_context() if ssl else None
        client = IMAPClient(self.host, port=port, ssl=ssl, ssl_context=context, timeout=timeout)
        try:
            client.login(address, password)
        except BaseException:
            client.shutdown()
            raise
        return client

    def env(self) -> dict[str, str]:
        """Connection settings, as written to ROOT/mailstack.env."""
        return {
            "MAILSTACK_DIR": str(self.root),
            "MAILSTACK_HOST": self.host,
            "MAILSTACK_IMAP_PORT": str(self.imap_port),
            "MAILSTACK_IMAPS_PORT": str(self.imaps_port),
            "MAILSTACK_SMTP_PORT": str(self.smtp_port),
            "MAILSTACK_LMTP_PORT": str(self.lmtp_port),
            "MAILSTACK_CA_FILE": str(self.ca_file),
            "MAILSTACK_USERS": ",".join(self.users()),
        }

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Write the configuration and start Dovecot, then Postfix; return once all ports accept.

        A stack still running from an earlier start on the same ROOT is stopped first.
        """
        self.stop()
        self._prepare()
        log = self.root / "log"
        with open(log / "dovecot.out", "a") as out:
            proc = run_cmd(["dovecot", "-c", self.conf], check=False, stdout=out, stderr=out)
        if proc.returncode != 0:
            raise RuntimeError(
                f"dovecot failed to start (exit {proc.returncode}):\n"
                f"{tail(log / 'dovecot.out')}\n{tail(log / 'dovecot.log')}"
            )
        try:
            with open(log / "postfix.out", "a") as out:
                proc = self._postfix("start", check=False, stdout=out, stderr=out)
            if proc.returncode != 0:
                # postfix start reports the reason only to syslog or a terminal.
                cmd = shlex.join(["postfix", "-c", str(self.postfix_dir), "check"])
                check = run_cmd(["script", "-qec", cmd, "/dev/null"], check=False,
                             capture_output=True)
                raise RuntimeError(
                    f"postfix failed to start (exit {proc.returncode}); postfix check says:\n"
                    f"{check.stdout}{check.stderr}\n{tail(log / 'postfix.log')}"
                )
            _wait_listening([self.imap_port, self.imaps_port, self.lmtp_port, self.smtp_port])
        except BaseException:
            self.stop()
            raise
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in self.env().items()))

    @contextlib.contextmanager
    def routed(self, domain: str, port: int) -> Iterator[None]:
        """While inside, Postfix relays mail for *domain* to 127.0.0.1:*port* (a relay's
        SMTP intake), as the domain's MX would; the stack relays nothing again after."""
        self._postconf(f"relay_domains = {domain}",
                       f"transport_maps = inline:{{{domain}=smtp:[127.0.0.1]:{port}}}")
        try:
            yield
        finally:
            self._postconf("relay_domains =", "transport_maps =")

    def _postconf(self, *settings: str) -> None:
        run_cmd(["postconf", "-c", self.postfix_dir, "-e", *settings], capture_output=True)
        past = time.time() - 5  # see _write_postfix_tables: a fresh main.cf costs seconds
        os.utime(self.postfix_dir / "main.cf", (past, past))
        self._postfix("reload")

    def stop(self) -> None:
        """Stop both masters (SIGTERM, as `postfix stop` does) and wait for their children."""
        _terminate(pid for pid in (self._postfix_pid(), self._dovecot_pid()) if pid is not None)
        # A stale pid that got reused would make dovecot refuse to start.
        (self.base_dir / "master.pid").unlink(missing_ok=True)
        if self._short is not None and self._short.exists():
            shutil.rmtree(self._short, ignore_errors=True)

    def is_running(self) -> bool:
        return self._dovecot_pid() is not None and self._postfix_pid() is not None

    def _dovecot_pid(self) -> int | None:
        return _live_pid(self.base_dir / "master.pid", {"dovecot"})

    def _postfix_pid(self) -> int | None:
        return _live_pid(self.root / "spool/postfix/pid/master.pid", {"master"})

    def _postfix(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("capture_output", "stdout" not in kwargs)
        return run_cmd(["postfix", "-c", self.postfix_dir, *args], **kwargs)

    def _prepare(self) -> None:
        """Create the directory tree, users, certificate and configuration files."""
        vmail = ensure_system_user("vmail")
        root = self.root
        for sub in ("postfix", "spool/postfix", "lib/dovecot", "log", "ssl", "run"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "mail").mkdir(exist_ok=True)
        os.chown(root / "mail", vmail.pw_uid, vmail.pw_gid)
        make_traversable(root, ["vmail", "dovecot", "postfix"])
        if self._short is not None:
            self._short.mkdir(mode=0o755, exist_ok=True)
            self._short.chmod(0o755)
            self.base_dir.mkdir(exist_ok=True)
            _symlink(self._short / "root", root)
            _symlink(root / "run" / "dovecot", self.base_dir)
        else:
            self.base_dir.mkdir(exist_ok=True)
        self._make_certificate()
        if not self.users_file.exists():
            self._write_users([])
        values = {
            "instance": self.instance,
            "base_dir": str(self.base_dir),
            "vmail_uid": str(vmail.pw_uid),
            "imap_port": str(self.imap_port),
            "imaps_port": str(self.imaps_port),
            "lmtp_port": str(self.lmtp_port),
            "smtp_port": str(self.smtp_port),
            "oauth2_mechanisms": "",
            "oauth2_passdb": "",
        }
        if self.oauth2_introspection_url:
            values["oauth2_mechanisms"] = " xoauth2 oauthbearer"
            values["oauth2_passdb"] = Template(DOVECOT_OAUTH2_PASSDB).substitute(root=root)
            ext = root / "dovecot-oauth2.conf.ext"
            ext.write_text(DOVECOT_OAUTH2_EXT.substitute(url=self.oauth2_introspection_url))
            ext.chmod(0o644)
        self.conf.write_text(DOVECOT_CONF.substitute(values, root=root))
        postfix_values = dict(values, root=str(self._postfix_root))
        (self.postfix_dir / "main.cf").write_text(POSTFIX_MAIN_CF.substitute(postfix_values))
        (self.postfix_dir / "master.cf").write_text(POSTFIX_MASTER_CF.substitute(postfix_values))
        self._write_postfix_tables()

    def _write_postfix_tables(self) -> None:
        """vdomains/vmailbox from the users file; all Postfix files backdated.

        Postfix re-reads a file in 300 ms steps until its mtime is in the past (a guard
        against half-written files): a fresh main.cf costs ~2 s per postfix command.
        """
        users = self.users()
        domains = dict.fromkeys([*self.domains, *(u.rsplit("@", 1)[1] for u in users)])
        (self.postfix_dir / "vdomains").write_text("".join(f"{d} OK\n" for d in domains))
        (self.postfix_dir / "vmailbox").write_text("".join(f"{u} OK\n" for u in users))
        past = time.time() - 5
        for name in ("main.cf", "master.cf", "vdomains", "vmailbox"):
            path = self.postfix_dir / name
            if path.exists():
                os.utime(path, (past, past))

    def _make_certificate(self) -> None:
        """Self-signed CA:TRUE certificate for localhost and 127.0.0.1 (kept across starts)."""
        ssl_dir = self.root / "ssl"
        key = ssl_dir / "key.pem"
        if not (self.ca_file.exists() and key.exists()):
            run_cmd(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650",
                  "-subj", "/CN=localhost",
                  "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                  "-keyout", key, "-out", self.ca_file], capture_output=True)
            key.chmod(0o600)
            self.ca_file.chmod(0o644)
        dh = ssl_dir / "dh.pem"
        if not dh.exists():
            shutil.copyfile(DOVECOT_DH, dh)


def _symlink(link: Path, target: Path) -> None:
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(target)


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a KEY=VALUE file as written by MailStack.start."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.servers.mailstack",
                                     description="Run a throw-away Postfix + Dovecot stack.")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--user", action="append", metavar="ADDRESS:PASSWORD",
                        help="mailbox to create (default: station1/station2@example.test:secret)")
    for name in ("imap", "imaps", "smtp", "lmtp"):
        parser.add_argument(f"--{name}-port", type=int)
    args = parser.parse_args(argv)
    root = args.dir.absolute()
    previous = read_env_file(root / "mailstack.env") if (root / "mailstack.env").exists() else {}

    def port(name: str) -> int | None:
        """--NAME-port, else the port of the previous start on DIR, else a free one."""
        given: int | None = getattr(args, f"{name}_port")
        return given or int(previous.get(f"MAILSTACK_{name.upper()}_PORT", 0)) or None

    stack = MailStack(root, imap_port=port("imap"), imaps_port=port("imaps"),
                      smtp_port=port("smtp"), lmtp_port=port("lmtp"))
    if args.action == "stop":
        stack.stop()
        return 0
    stack.install()
    users = args.user or ([] if stack.users() else
                          ["station1@example.test:secret", "station2@example.test:secret"])
    for spec in users:
        address, password = spec.split(":", 1)
        stack.add_user(address, password)
    started = time.monotonic()
    stack.start()
    sys.stdout.write(stack.env_file.read_text())
    sys.stderr.write(f"started in {time.monotonic() - started:.2f} s; env: {stack.env_file}\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
