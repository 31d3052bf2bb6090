"""Delivery worker: hands due outbox rows to their station, by SMTP or into a Maildir.

Delivery is *at least once*. A row is claimed (``sending``, with a lease)
before the attempt and marked ``delivered`` after it (a pass's rows together, in one
transaction); a crash in between leaves it ``sending``, and it is sent again on
restart (SQLite) or when its lease ends (PostgreSQL), with the very same bytes,
hence the same Message-ID.
A timeout or a lost connection after the final ``.`` of DATA is the same
doubt without a crash: the server may have queued the tip, so it is retried
like any other failure. Maildir delivery is idempotent by file name; over
SMTP the mailbox may hold two copies, and the station's poller indexes by
Message-ID, so they are one tip, not two (``tests/relay/test_outbox_after_data.py``).
The other choice, at most once, could lose an acknowledged tip.

Failures: 4xx replies, refused connections, timeouts and TLS errors are
retried with exponential backoff (30 s doubling, capped at 1 h, with jitter)
until ``relay.retry_days`` have passed since the row was accepted (or last
retried by an admin); then the row is ``dead``. A 5xx reply makes it dead at
once. The server's reply is kept for ``mailbridge outbox list``.

Logs carry ref, station, state, attempt and server code: never the message,
never an error text (it could quote an address).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import aiosmtplib

from ..config import Settings, SmtpSettings, Station
from ..core.text import one_line
from ..errors import ConfigError, DeliveryError, PermanentDeliveryError, StoreError, TokenError
from ..fsmodes import open_private, private_dir
from ..oauth2 import token_source
from .dkim import DkimSigner, load_signer
from .store import DEAD, Claimed, RelayStore

log = logging.getLogger(__name__)

MAX_ERROR = 500


@dataclass(frozen=True)
class Backoff:
    """Delay before attempt ``n + 1`` after ``n`` failures: base * factor**(n-1), capped,
    then spread by +-jitter so rows that failed together do not retry together."""

    base: float = 30.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.2

    def delay(self, failures: int, rng: random.Random) -> timedelta:
        seconds = min(self.cap, self.base * self.factor ** max(0, failures - 1))
        spread = seconds * self.jitter
        return timedelta(seconds=max(1.0, seconds + rng.uniform(-spread, spread)))


class DeliveryWorker:
    """Delivers due rows; ``run()`` loops until ``stop`` is set.

    ``clock``, ``backoff`` and ``rng`` are injectable so tests step through
    retries without sleeping. Blocking database calls run in threads.
    """

    def __init__(self, settings: Settings, store: RelayStore, *,
                 backoff: Backoff | None = None, clock: Callable[[], datetime] | None = None,
                 rng: random.Random | None = None, batch: int = 20, concurrency: int = 4,
                 lease: timedelta | None = None, max_idle: float = 60.0,
                 settle: float = 0.2) -> None:
        self.settings = settings
        self.store = store
        self.backoff = backoff or Backoff()
        self.clock = clock or store.clock
        self.rng = rng or random.SystemRandom()
        self.batch = batch
        self.max_idle = max_idle
        # Under a burst (the last pass, less than a second ago, found several rows due),
        # wait this long after a wake-up so the burst goes out as one pass: one claim and
        # one WAL checkpoint for many rows instead of one per tip. A lone tip goes at once.
        self.settle = settle
        self._last_busy = -1e9
        self._purge_pending = False  # a reader elsewhere kept the WAL: purge at the next pass
        self._expiry_hour: datetime | None = None  # the hour expired tips were last deleted
        timeouts = [s.smtp.timeout for s in settings.stations.values() if s.smtp]
        # The lease must outlast one attempt, or a second relay could send it too.
        self.lease = lease or timedelta(seconds=max([600.0, *(4 * t for t in timeouts)]))
        self.concurrency = concurrency
        self.dkim = load_signer(settings)
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Start a pass now (call after ``accept()``); safe from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)
        else:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; rows a crash left ``sending`` go first."""
        self._loop = asyncio.get_running_loop()
        if self.dkim is None and any(s.smtp and not s.maildir
                                     for s in self.settings.stations.values()):
            log.warning("outbox: mail is not DKIM-signed: run `mailbridge dkim-key` and "
                        "publish its record, or Gmail and Microsoft 365 file tips as spam")
        recovered = False
        while not stop.is_set():
            self._wake.clear()
            try:
                if not recovered:
                    count = await asyncio.to_thread(self.store.recover_interrupted)
                    recovered = True
                    if count:
                        log.info("outbox: %d interrupted deliveries queued again", count)
                await self.deliver_due()
                await self.purge_expired()
                if self._purge_pending:  # at least once a max_idle until a reader lets go
                    await self._purge()
                due = await asyncio.to_thread(self.store.next_due)
                wait = self.max_idle if due is None else (due - self.clock()).total_seconds()
            except StoreError as exc:
                log.error("outbox: %s", exc)
                wait = 10.0
            await self._sleep(stop, min(max(wait, 0.0), self.max_idle))

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        if seconds <= 0:
            return
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        busy = time.monotonic() - self._last_busy < 1.0
        if busy and self._wake.is_set() and not stop.is_set() and self.settle > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settle)

    async def deliver_due(self) -> int:
        """One pass over up to ``batch`` due rows; returns how many were delivered."""
        claims = await asyncio.to_thread(self.store.claim_due, self.batch, self.lease)
        if not claims:
            return 0
        if len(claims) > 1:
            self._last_busy = time.monotonic()
        slots = asyncio.Semaphore(self.concurrency)  # per pass: tests run passes in new loops
        results = await asyncio.gather(*(self._attempt(c, slots) for c in claims))
        # The pass's deliveries are recorded together: one write transaction, not one a
        # row. A crash before it sends them again, as a crash after each attempt did.
        delivered = [claim for claim in results if claim is not None]
        if delivered:
            await asyncio.to_thread(self.store.mark_delivered, *delivered)
            for claim in delivered:
                self._log("delivered", claim)
        await self._purge()
        return len(delivered)

    async def purge_expired(self) -> int:
        """Once an hour: delete conversations older than ``relay.conversation_days``
        and outbox rows past ``relay.outbox_days``, then fold the WAL so their rows
        leave no copy. Returns how many."""
        hour = self.clock().replace(minute=0, second=0, microsecond=0)
        if hour == self._expiry_hour:
            return 0
        self._expiry_hour = hour
        expired = await asyncio.to_thread(self.store.purge_expired)
        if expired.total:
            log.info("outbox: %d expired conversations and %d old outbox rows deleted",
                     expired.conversations, expired.outbox_rows)
            await self._purge()
        return expired.total

    async def _purge(self) -> None:
        self._purge_pending = not await asyncio.to_thread(self.store.purge_freed)

    async def _attempt(self, claim: Claimed, slots: asyncio.Semaphore) -> Claimed | None:
        """Deliver one claimed row: the claim when it went, None when it is marked
        failed (the caller records deliveries)."""
        async with slots:
            station = self.settings.station(claim.station_id)
            try:
                if station is None:
                    raise DeliveryError(
                        f"station {claim.station_id!r} is no longer in the config: add it "
                        f"back, or give up with `mailbridge outbox drop {claim.id}`")
                await self._deliver(station, claim)
            except PermanentDeliveryError as exc:
                await asyncio.to_thread(self.store.mark_failed, claim, str(exc), None)
                self._log("dead", claim, exc)
                return None
            except DeliveryError as exc:
                await self._defer(claim, exc)
                return None
            except Exception as exc:  # a bug must not leave the row stuck in "sending"
                # Only the type: an exception text or traceback could quote the message.
                log.error("outbox: unexpected %s station=%s attempt=%d",
                          type(exc).__name__, claim.station_id, claim.attempts)
                await self._defer(claim, DeliveryError(f"internal error {type(exc).__name__}: "
                                                       f"please report it"))
                return None
            return claim

    async def _defer(self, claim: Claimed, exc: DeliveryError) -> None:
        retry_at: datetime | None = self.clock() + self.backoff.delay(claim.attempts, self.rng)
        error = str(exc)
        give_up = claim.window_hour + timedelta(days=self.settings.relay.retry_days)
        if retry_at is not None and retry_at > give_up:
            retry_at = None
            error = (f"gave up after {claim.attempts} attempts in "
                     f"{self.settings.relay.retry_days} days; last: {error}")
        state = await asyncio.to_thread(self.store.mark_failed, claim, error, retry_at)
        self._log(state if state == DEAD else "deferred", claim, exc)

    async def _deliver(self, station: Station, claim: Claimed) -> None:
        if station.maildir is not None:
            await asyncio.to_thread(deliver_maildir, station.maildir, claim.id, claim.message,
                                    self.dkim, again=claim.attempts > 1)
            return
        if station.smtp is None:
            raise PermanentDeliveryError(
                f"station {station.id!r} has neither smtp nor maildir: configure one, then "
                f"`mailbridge outbox retry {claim.id}`")
        relay = self.settings.relay
        data = claim.message
        if self.dkim is not None:  # in a thread, off the loop: 1-3 ms of CPU
            data = await asyncio.to_thread(self.dkim.sign, data)
        await deliver_smtp(station.smtp, relay.address, station.mailbox, data,
                           local_hostname=relay.domain)

    @staticmethod
    def _log(state: str, claim: Claimed, exc: Exception | None = None) -> None:
        """No ref at INFO/WARNING: the journal's timestamp of a first attempt would pin
        a tip's submission to the minute. ``mailbridge outbox list`` names the rows."""
        level = logging.INFO if state == "delivered" else logging.WARNING
        code = server_code(str(exc)) if exc else "250"
        log.log(level, "outbox: %s station=%s attempt=%d code=%s", state, claim.station_id,
                claim.attempts, code)
        log.debug("outbox: %s ref=%s", state, claim.ref)


def server_code(error: str) -> str:
    """The SMTP reply code an error text starts with, or ``-``."""
    head = error[:3]
    return head if head.isdigit() and error[3:4] in (" ", "") else "-"


def _reply(code: int, message: str) -> str:
    return one_line(f"{code} {message}", max_length=MAX_ERROR)


def smtp_client(smtp: SmtpSettings, *, local_hostname: str) -> aiosmtplib.SMTP:
    """The one SMTP client of delivery and ``mailbridge check --connect``: TLS mode, CA
    file, timeout and login all come from here, so a passing check means delivery logs in.
    ``async with`` connects, upgrades to TLS and logs in; leaving it says QUIT."""
    context: ssl.SSLContext | None = None
    if smtp.tls != "none":
        try:
            context = ssl.create_default_context(
                cafile=str(smtp.ca_file) if smtp.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(f"smtp.ca_file {smtp.ca_file} cannot be used ({exc}): fix "
                                f"the path, then `mailbridge outbox retry`") from exc
    oauth2 = token_source(smtp.oauth2) if smtp.oauth2 else None

    async def access_token() -> str:  # XOAUTH2; a refused one is renewed by deliver_smtp
        assert oauth2 is not None
        return (await asyncio.to_thread(oauth2.access_token)).reveal()

    return aiosmtplib.SMTP(
        hostname=smtp.host, port=smtp.port, username=smtp.username or None,
        password=smtp.password.reveal() if smtp.username and not oauth2 else None,
        oauth_token_generator=access_token if oauth2 else None,
        local_hostname=local_hostname, timeout=smtp.timeout,
        use_tls=smtp.tls == "tls", start_tls=smtp.tls == "starttls", tls_context=context)


async def deliver_smtp(smtp: SmtpSettings, sender: str, recipient: str, data: bytes, *,
                       local_hostname: str) -> None:
    """Send ``data`` to one recipient; 5xx raises PermanentDeliveryError, the rest
    DeliveryError, with the server's code and text (never the message)."""
    where = f"{smtp.host}:{smtp.port}"
    try:
        try:
            await _send(smtp, sender, recipient, data, local_hostname=local_hostname)
        except aiosmtplib.SMTPAuthenticationError:
            if smtp.oauth2 is None:
                raise
            # The access token may have ended early: once more with a new one.
            source = token_source(smtp.oauth2)
            await asyncio.to_thread(lambda: source.access_token(stale=source.access_token()))
            await _send(smtp, sender, recipient, data, local_hostname=local_hostname)
    except (ConfigError, TokenError) as exc:  # OAuth2: the row waits for the admin's fix
        raise DeliveryError(str(exc)) from exc
    except aiosmtplib.SMTPRecipientsRefused as exc:
        first = exc.recipients[0]
        raise _classify(first.code, first.message) from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise _classify(exc.code, exc.message) from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        detail = one_line(str(exc), max_length=200) or type(exc).__name__
        raise DeliveryError(f"{where}: {detail}") from exc


async def _send(smtp: SmtpSettings, sender: str, recipient: str, data: bytes, *,
                local_hostname: str) -> None:
    client = smtp_client(smtp, local_hostname=local_hostname)
    async with client:
        await client.sendmail(sender, [recipient], data)


def _classify(code: int, message: str) -> DeliveryError:
    if 500 <= code <= 599:
        return PermanentDeliveryError(_reply(code, message))
    return DeliveryError(_reply(code, message))


def maildir_name(outbox_id: int, data: bytes) -> str:
    """Deterministic per row (id + digest of its bytes): a redelivery finds its earlier
    copy, and a database reset that reuses ids cannot match an older tip's file."""
    return f"mailbridge-{outbox_id}-{hashlib.sha256(data).hexdigest()[:16]}"


def find_delivered(root: Path, name: str) -> Path | None:
    """The earlier copy of ``name`` in new/ or cur/ (cur/ names get ``:2,FLAGS``)."""
    candidate = root / "new" / name
    if candidate.exists():
        return candidate
    try:
        with os.scandir(root / "cur") as entries:
            for entry in entries:
                if entry.name == name or entry.name.startswith(name + ":"):
                    return Path(entry.path)
    except FileNotFoundError:
        return None
    return None


def deliver_maildir(root: Path, outbox_id: int, data: bytes,
                    dkim: DkimSigner | None = None, *, again: bool = True) -> Path:
    """Write into ``root/new`` the Maildir way (tmp/, fsync, rename, fsync dir).

    Idempotent: if this row's file is already in new/ or cur/, nothing is written
    (the name comes from the unsigned bytes: a DKIM signature differs at each attempt).
    A row's first attempt (``again=False``) cannot have an earlier copy, so it does not
    look: cur/ holds every message read, and listing 50,000 of them took 41 ms.
    Lines end in LF, as local Maildir readers expect. Files are 0600 and the folders
    made here 0700, whatever the umask.
    """
    name = maildir_name(outbox_id, data)
    try:
        for sub in ("tmp", "new", "cur"):
            private_dir(root / sub)
        existing = find_delivered(root, name) if again else None
        if existing is not None:
            return existing
        tmp, final = root / "tmp" / name, root / "new" / name
        fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "wb") as out:
            signed = dkim.sign(data) if dkim is not None else data
            out.write(signed.replace(b"\r\n", b"\n"))
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, final)
        dir_fd = os.open(root / "new", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final
    except OSError as exc:
        raise DeliveryError(f"cannot write into maildir {root} ({exc.strerror}): check the "
                            f"path and that the relay's user may write there") from exc
