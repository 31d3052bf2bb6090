"""One IMAP connection to a station mailbox, with the discipline the poller needs.

A thin seam over imapclient that fixes what it leaves to the caller:
- socket timeouts always (connect and read), so a stalled server cannot hang us;
- read-only: folders are opened with EXAMINE and bodies fetched with BODY.PEEK,
  so the poller never changes \\Seen or anything else in the mailbox;
- UID sets are sent as compact ranges (``1:500,502``), because imapclient 4.x
  refuses ``1:*`` strings and 20,000 explicit UIDs overflow Dovecot's line limit;
- VANISHED (QRESYNC) responses are collected, which imapclient does not parse;
- IDLE is read line by line here: imapclient's ``idle_check`` swallows BYE and
  EOF, which turns a dropped connection into a busy loop.
Every command sent is recorded in ``sent`` (first line, without the tag, at
most 160 characters; LOGIN arguments never), so tests and the benchmark count
real round trips. All library errors become ``PollError``.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import select
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient, SocketTimeout, imap_utf7
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.response_parser import parse_fetch_response

from ...config import ImapSettings
from ...errors import ConfigError, PollError, TokenError
from ...oauth2 import sign_in, token_source

FetchData = dict[int, dict[bytes, Any]]
_ERRORS = (OSError, IMAPClientError, imaplib.IMAP4.error, ValueError)
_TAGGED = re.compile(rb"^[A-Za-z0-9]+ ((?:UID )?[A-Z]+)[^\r\n]*")


def uid_set(uids: Iterable[int]) -> str:
    """Compact IMAP sequence set for UIDs: ``[1,2,3,5]`` -> ``"1:3,5"``."""
    out: list[str] = []
    run: list[int] = []
    for uid in sorted(set(uids)):
        if run and uid == run[-1] + 1:
            run.append(uid)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1]}")
        run = [uid]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1]}")
    return ",".join(out)


def parse_uid_set(text: str) -> set[int]:
    """``"1:3,7"`` -> {1, 2, 3, 7} (the VANISHED payload)."""
    result: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _sep, hi = part.partition(":")
        a, b = int(lo), int(hi or lo)
        result.update(range(min(a, b), max(a, b) + 1))
    return result


def folder_name(name: str) -> str:
    """Accept folder names as Unicode or already in modified UTF-7 (``&AMk-t&AOk-``)."""
    if "&" in name and name.isascii():
        try:
            decoded: str = imap_utf7.decode(name.encode("ascii"))
        except (ValueError, UnicodeError):
            return name
        if imap_utf7.encode(decoded) == name.encode("ascii"):
            return decoded
    return name


@dataclass(frozen=True)
class FolderInfo:
    uidvalidity: int
    uidnext: int
    messages: int
    highestmodseq: int


class ImapConnection:
    """A logged-in, read-only connection; call ``close()`` when done."""

    def __init__(self, settings: ImapSettings, *, host: str | None = None,
                 port: int | None = None) -> None:
        self.settings = settings
        self.host = host or settings.host
        self.port = port or settings.port
        self.sent: list[str] = []  # commands sent, e.g. "UID FETCH 1:250 (UID FLAGS ...)"
        self.client: Any = None
        self.condstore = self.qresync = self.idle_ok = False
        self.selected: str | None = None

    # -- lifecycle ------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        cafile = str(self.settings.ca_file) if self.settings.ca_file else None
        try:
            return ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"imap.ca_file {cafile} cannot be read: {exc}; point it at the "
                              f"server's CA certificate (PEM)") from exc

    def connect(self) -> None:
        s = self.settings
        timeout = SocketTimeout(connect=s.timeout, read=s.timeout)
        where = f"{self.host}:{self.port}"
        try:
            context = self._context() if s.tls != "none" else None
            self.client = IMAPClient(self.host, port=self.port, ssl=s.tls == "tls",
                                     ssl_context=context, timeout=timeout)
            self._record()
            if s.tls == "starttls":
                self.client.starttls(context)
            self._login()
            caps = {c.upper() for c in self.client.capabilities()}
        except IMAPClientError as exc:
            self.close()
            if "auth" in str(exc).lower() or "login" in str(exc).lower():
                what = ("imap.oauth2 (the app's IMAP permission)" if s.oauth2
                        else "the password in imap.password_env")
                raise PollError(f"IMAP login to {where} as {s.username!r} failed: {exc}; check "
                                f"imap.username and {what}") from exc
            raise PollError(f"IMAP connection to {where} failed: {exc}") from exc
        except TokenError as exc:
            self.close()
            raise PollError(str(exc)) from exc
        except (ConfigError, PollError):
            self.close()
            raise
        except _ERRORS as exc:
            self.close()
            raise PollError(f"cannot reach the IMAP server {where}: {exc}; check imap.host, "
                            f"imap.port and imap.tls, and that the server is up") from exc
        self.idle_ok = b"IDLE" in caps
        self.condstore = b"CONDSTORE" in caps or b"QRESYNC" in caps
        wanted = [c for c in (b"CONDSTORE", b"QRESYNC") if c in caps]
        if wanted:
            enabled = self._call(self.client.enable, *wanted)
            self.qresync = b"QRESYNC" in {e.upper() for e in enabled}
        self.selected = None

    def _login(self) -> None:
        s = self.settings
        if s.oauth2 is None:
            self.client.login(s.username, s.password.reveal())
            return
        if b"AUTH=XOAUTH2" not in {c.upper() for c in self.client.capabilities()}:
            raise PollError(f"the IMAP server {self.host}:{self.port} does not offer XOAUTH2: "
                            f"check imap.host, or remove imap.oauth2 and use password_env")
        sign_in(token_source(s.oauth2),
                lambda token: self.client.oauth2_login(s.username, token.reveal()), LoginError)

    def _record(self) -> None:
        """Wrap the socket writer so every command sent is counted by name."""
        imap = self.client._imap
        send = imap.send

        def recording_send(data: bytes) -> None:
            match = _TAGGED.match(data)
            if match and not data.startswith(b"DONE"):
                line = match.group(0).decode("ascii", "replace").split(" ", 1)[1]
                self.sent.append("LOGIN" if line.startswith("LOGIN") else line[:160])
            send(data)

        imap.send = recording_send

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        # Logging out of a dead connection is best effort, and then leaves its socket
        # open (the server already hung up): shut it down in any case.
        with contextlib.suppress(Exception):
            client.logout()
        with contextlib.suppress(Exception):
            client.shutdown()

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.client is None:
            raise PollError("not connected to the IMAP server")
        try:
            return fn(*args, **kwargs)
        except _ERRORS as exc:
            raise PollError(f"IMAP {getattr(fn, '__name__', 'command')} on "
                            f"{self.host}:{self.port} failed: {exc}") from exc

    # -- commands -------------------------------------------------------------------

    def status(self, folder: str) -> FolderInfo:
        """STATUS of *folder*; for the selected one, NOOP first so the session view is fresh."""
        if self.selected == folder:
            self._call(self.client.noop)
        items = [b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY"]
        if self.condstore:
            items.append(b"HIGHESTMODSEQ")
        data = self._call(self.client.folder_status, folder, items)
        return FolderInfo(int(data.get(b"UIDVALIDITY", 0)), int(data.get(b"UIDNEXT", 0)),
                          int(data.get(b"MESSAGES", 0)), int(data.get(b"HIGHESTMODSEQ", 0)))

    def examine(self, folder: str) -> FolderInfo:
        """Open *folder* read-only (EXAMINE): nothing we do can change it."""
        data = self._call(self.client.select_folder, folder, readonly=True)
        self.selected = folder
        return FolderInfo(int(data.get(b"UIDVALIDITY", 0)), int(data.get(b"UIDNEXT", 0)),
                          int(data.get(b"EXISTS", 0)), int(data.get(b"HIGHESTMODSEQ", 0)))

    def search(self, *criteria: str) -> list[int]:
        return sorted(int(u) for u in self._call(self.client.search, list(criteria)))

    def fetch(self, uids: Sequence[int] | str, items: Sequence[str],
              modifiers: Sequence[str] = ()) -> tuple[FetchData, set[int]]:
        """UID FETCH with a compact UID set; returns (data by UID, VANISHED UIDs)."""
        message_set = uids if isinstance(uids, str) else uid_set(uids)
        if not message_set:
            return {}, set()
        return self._call(self._fetch, message_set, items, modifiers)  # type: ignore[no-any-return]

    def _fetch(self, message_set: str, items: Sequence[str],
               modifiers: Sequence[str]) -> tuple[FetchData, set[int]]:
        imap = self.client._imap
        args = ["FETCH", message_set, "(" + " ".join(items) + ")"]
        if modifiers:
            args.append("(" + " ".join(modifiers) + ")")
        tag = imap._command("UID", *args)
        typ, data = imap._command_complete("FETCH", tag)
        if typ != "OK":
            raise PollError(f"UID FETCH failed: {data!r}")
        typ, data = imap._untagged_response(typ, data, "FETCH")
        vanished: set[int] = set()
        for line in imap.untagged_responses.pop("VANISHED", []):
            text = line.decode("ascii", "replace") if isinstance(line, bytes) else str(line)
            vanished |= parse_uid_set(text.replace("(EARLIER)", "").strip())
        parsed = parse_fetch_response([d for d in data if d is not None], True, True)
        return {int(k): v for k, v in parsed.items()}, vanished

    # -- IDLE -----------------------------------------------------------------------

    def idle_wait(self, seconds: float) -> bool:
        """IDLE on the selected folder up to *seconds*; True if the server reported a change.

        BYE and EOF raise ``PollError`` (imapclient would hide them and spin).
        """
        self._call(self.client.idle)
        deadline = time.monotonic() + seconds
        changed = False
        try:
            while not changed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                line = self._read_line(remaining)
                if line is None:
                    continue
                if line.startswith(b"* BYE"):
                    raise PollError(f"the IMAP server closed the session: "
                                    f"{line.decode('utf-8', 'replace').strip()}")
                changed = bool(re.match(rb"\* (\d+ (EXISTS|EXPUNGE|FETCH)|VANISHED)", line))
        except PollError:
            self.close()
            raise
        self._call(self.client.idle_done)
        return changed

    def _read_line(self, timeout: float) -> bytes | None:
        try:
            sock = self.client.socket()
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            if not pending:
                poller = select.poll()
                poller.register(sock.fileno(), select.POLLIN)
                if not poller.poll(max(1, int(timeout * 1000))):
                    return None
            line: bytes = self.client._imap._get_line()
            return line
        except (OSError, imaplib.IMAP4.abort, IMAPClientError) as exc:
            raise PollError(f"the IMAP connection to {self.host}:{self.port} dropped while "
                            f"idle: {exc}") from exc
