"""``mailbridge poll``: index every station mailbox into the ledger, once or forever.

Each station with ``[stations.imap]`` gets an IMAP poller (IDLE-driven when
running forever); a station with only a ``maildir`` gets the maildir poller
(the demo). Output is one summary line per poll, counts only (never tip text),
and a progress bar while a long first index runs. After every poll pass the
mailbox signals configured under ``ledger.folder_status`` / ``ledger.flag_status``
become tip statuses, so they land even when no terminal is open.
"""

from __future__ import annotations

import logging
import threading

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from sqlalchemy.orm import Session, sessionmaker

from ...config import Settings, Station
from ...errors import ConfigError, LedgerError, MailbridgeError, PollError
from ...openpgp import Decryptor
from ..ledger.db import make_engine, session_factory, upgrade
from ..ledger.store import LedgerStore
from ..ledger.workflow import apply_signals
from ..records import Counts
from .imap import ImapConnection
from .maildir import MaildirPoller
from .sync import ImapPoller

log = logging.getLogger(__name__)
PROGRESS_FROM = 1000     # show a bar only for a long (first) index
MAILDIR_INTERVAL = 2.0   # seconds between maildir scans when running forever


class ProgressBar:
    """A rich progress bar that appears only when a folder has many new messages."""

    def __init__(self, console: Console, station: str) -> None:
        self.console, self.station = console, station
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def __call__(self, folder: str, done: int, total: int) -> None:
        if total < PROGRESS_FROM:
            return
        if self.bar is None:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeRemainingColumn(),
                                console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(f"{self.station} {folder}", total=total)
        assert self.task is not None
        self.bar.update(self.task, completed=min(done, total))
        if done >= total:
            self.bar.stop()
            self.bar = self.task = None


def decryptor(station: Station) -> Decryptor | None:
    """How the poller opens tips encrypted to the station: its private key file (the
    passphrase from ``openpgp_passphrase_env``) or its GnuPG home; None without either."""
    if station.openpgp_secret_key is None and station.openpgp_gnupghome is None:
        return None
    return Decryptor(secret_key=station.openpgp_secret_key,
                     gnupghome=station.openpgp_gnupghome,
                     passphrase=station.openpgp_passphrase.reveal(),
                     key=f"stations.{station.id}.openpgp_secret_key")


class StationPoller:
    """One station: an IMAP or maildir poller bound to the shared ledger."""

    def __init__(self, settings: Settings, station: Station, store: LedgerStore,
                 console: Console) -> None:
        self.station = station
        self.console = console
        self.sessions: sessionmaker[Session] = store.sessions
        self.folder_status = settings.ledger.folder_status
        self.flag_status = settings.ledger.flag_status
        progress = ProgressBar(console, station.id)
        relay, max_bytes = settings.relay_identity(), settings.ledger.max_message_bytes
        self.imap: ImapPoller | None = None
        self.maildir: MaildirPoller | None = None
        decrypt = decryptor(station)
        if station.imap is not None:
            self.imap = ImapPoller(ImapConnection(station.imap), store, relay=relay,
                                   max_message_bytes=max_bytes, progress=progress,
                                   decrypt=decrypt, memory_mb=settings.ledger.memory_mb)
        elif station.maildir is not None:
            self.maildir = MaildirPoller(station.maildir, store, relay=relay,
                                         max_message_bytes=max_bytes, decrypt=decrypt)
        self.progress = progress
        self.error: MailbridgeError | None = None

    def report(self, counts: Counts) -> None:
        """Apply the mailbox signals of this pass, then print the summary line."""
        self.apply_signals()
        self.console.print(f"poll {self.station.id}: {counts.line()}", highlight=False)

    def apply_signals(self) -> int:
        """Configured folder/flag signals -> statuses, in a transaction of their own.

        Idempotent (each signal's ``Audit.event_id`` is unique), so running it after
        every pass, and from terminals at the same time, applies each signal once.
        """
        if not self.folder_status and not self.flag_status:
            return 0
        with self.sessions() as s:
            return apply_signals(s, folder_status=self.folder_status,
                                 flag_status=self.flag_status)

    def poll_once(self) -> Counts:
        if self.imap is not None:
            try:
                return self.imap.poll()
            finally:
                self.imap.conn.close()
        assert self.maildir is not None
        return self.maildir.poll(self.progress)

    def run_forever(self, stop: threading.Event) -> None:
        """Run until *stop*; a configuration error ends this station (kept in ``error``)."""
        try:
            self._run_forever(stop)
        except MailbridgeError as exc:
            self.error = exc
            self.console.print(f"poll {self.station.id}: stopped: {exc}", highlight=False)

    def _run_forever(self, stop: threading.Event) -> None:
        if self.imap is not None:
            self.imap.run_forever(stop=stop.is_set, report=self.report)
            return
        assert self.maildir is not None
        while not stop.is_set():
            try:
                counts = self.maildir.poll(self.progress)
                if counts.changed():
                    self.report(counts)
                else:
                    self.apply_signals()
            except LedgerError as exc:
                log.warning("%s: %s", self.station.id, exc)
            stop.wait(MAILDIR_INTERVAL)


def select_stations(settings: Settings, station: str | None) -> list[Station]:
    if station is not None:
        found = settings.station(station)
        if found is None:
            raise ConfigError(f"--station {station!r} is not configured: choose one of "
                              f"{', '.join(sorted(settings.stations))}")
        chosen = [found]
    else:
        chosen = list(settings.stations.values())
    usable = [s for s in chosen if s.imap is not None or s.maildir is not None]
    if not usable:
        raise ConfigError("no station has [stations.imap] or a maildir to poll: add one "
                          "(see config/mailbridge.example.toml)")
    return usable


def poll(settings: Settings, *, once: bool, station: str | None = None,
         console: Console | None = None, stop: threading.Event | None = None) -> int:
    """Index the stations' mailboxes; return an exit code (0 ok, 3 a mailbox failed).

    With ``once`` every station is polled a single time; otherwise each station
    runs in its own thread until *stop* is set or the process is interrupted.
    """
    stations = select_stations(settings, station)
    console = console or Console(stderr=True)
    upgrade(settings.ledger.database)
    engine = make_engine(settings.ledger.database)
    sessions = session_factory(engine)
    pollers = [StationPoller(settings, st, LedgerStore(sessions, st.id, st.mailbox,
                                                       settings.ledger.attachments_dir), console)
               for st in stations]
    try:
        if once:
            return _once(pollers, console)
        return _forever(pollers, stop or threading.Event())
    finally:
        engine.dispose()


def _once(pollers: list[StationPoller], console: Console) -> int:
    failed = 0
    for p in pollers:
        try:
            p.report(p.poll_once())
        except (PollError, LedgerError) as exc:
            failed += 1
            console.print(f"poll {p.station.id}: failed: {exc}", highlight=False)
    return 3 if failed else 0


def _forever(pollers: list[StationPoller], stop: threading.Event) -> int:
    threads = [threading.Thread(target=p.run_forever, args=(stop,), daemon=True,
                                name=f"poll-{p.station.id}") for p in pollers]
    for t in threads:
        t.start()
    try:
        while not stop.is_set() and any(t.is_alive() for t in threads):
            stop.wait(1.0)
    except KeyboardInterrupt:
        stop.set()
    return max((p.error.exit_code for p in pollers if p.error is not None), default=0)
