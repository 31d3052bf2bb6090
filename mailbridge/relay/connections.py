"""Limits on the public port, so idle or trickling clients cannot take the relay down.

Every accepted connection costs a file descriptor. Without limits, about a
thousand half-open connections used up the 1024 descriptors systemd allows by
default: the relay then served no one, and asyncio logged each failed
``accept()``. Three limits keep it serving:

- a cap on open connections, below the open-file limit with room for the
  database, delivery and the accept burst. At the cap, a new connection
  pushes out the oldest one still waiting for its request head (a slow-loris
  holds those), or is closed at once when every connection is busy;
- a deadline for the request head (from the connection, or from the end of
  the previous response), and one for the body: trickling bytes does not
  reset them;
- a short listen backlog, which also bounds how many connections asyncio
  accepts in one go.

h11's limit on an incomplete request head (``HEAD_BYTES``) refuses oversized
heads. Each drop is logged without any address; ``server.OncePerInterval`` keeps
a flood of them to one line per minute.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ConfigError

log = logging.getLogger(__name__)

BACKLOG = 32
HEAD_BYTES = 8 * 1024
# Descriptors kept free for everything but client connections: stdio, the event loop,
# the database pool (up to 15 connections, three files each on SQLite), delivery, and
# the connections a flood has in asyncio's pipeline. Each loop pass accepts up to
# BACKLOG, and an accepted socket becomes a transport one pass later, is admitted (and
# pushes out an idle one) the next, and that one is closed the pass after: four
# bursts in flight at once. With two (and BACKLOG 64) a flood of idle connections
# reached the open-file limit.
RESERVED_FDS = 64 + 4 * BACKLOG
# A body with photos gets more time than a text: one more second per 4 KB announced beyond
# 64 KiB (a weak 2G uplink sends about 32 kbit/s), at most half an hour more.
SLOW_UPLOAD_BYTES_PER_SECOND = 4000
TEXT_BODY_BYTES = 64 * 1024
MAX_EXTRA_BODY_SECONDS = 1800.0
MIN_CONNECTIONS = 16


@dataclass(frozen=True)
class Limits:
    """``relay.max_connections`` (fitted to the open-file limit) and the deadlines."""

    max_connections: int
    header_timeout: float
    body_timeout: float


def fit_open_file_limit(wanted: int) -> int:
    """The connection cap that fits RLIMIT_NOFILE: the soft limit is first raised
    towards the hard one if needed; what still does not fit lowers the cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinity = resource.RLIM_INFINITY
    if soft == infinity:
        return wanted
    needed = wanted + RESERVED_FDS
    if soft < needed and (hard == infinity or soft < hard):
        soft = needed if hard == infinity else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    room = soft - RESERVED_FDS
    if room < min(wanted, MIN_CONNECTIONS):
        raise ConfigError(f"the open-file limit is {soft}: the relay needs at least "
                          f"{MIN_CONNECTIONS + RESERVED_FDS}; raise LimitNOFILE in its "
                          f"systemd unit (or ulimit -n)")
    if room < wanted:
        log.warning("relay.max_connections lowered from %d to %d to fit the open-file limit "
                    "of %d: raise LimitNOFILE to at least %d", wanted, room, soft, needed)
        return room
    return wanted


class ConnectionGuard:
    """The connections of one server: how many are open, which wait for a request."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open: set[GuardedH11Protocol] = set()
        self.waiting: dict[GuardedH11Protocol, None] = {}  # oldest first

    def admit(self, conn: GuardedH11Protocol) -> bool:
        """Count ``conn`` in; at the cap, make room or refuse it (False)."""
        self.open.add(conn)
        if len(self.open) <= self.limits.max_connections:
            return True
        oldest = next(iter(self.waiting), None)
        if oldest is None:
            log.warning("connection cap of %d reached and every connection is busy: "
                        "new connections are refused", self.limits.max_connections)
            conn.drop()
            return False
        log.warning("connection cap of %d reached: the oldest connections still waiting "
                    "for a request are dropped", self.limits.max_connections)
        oldest.drop()
        return True

    def release(self, conn: GuardedH11Protocol) -> None:
        self.open.discard(conn)
        self.waiting.pop(conn, None)


def body_seconds(body_timeout: float, content_length: bytes) -> float:
    """The body's deadline: ``body_timeout``, plus time for a large body (photos) at a
    slow 2G rate; a text form's is ``body_timeout`` itself."""
    size = int(content_length) if content_length.isdigit() else 0
    extra = max(0, size - TEXT_BODY_BYTES) / SLOW_UPLOAD_BYTES_PER_SECOND
    return body_timeout + min(extra, MAX_EXTRA_BODY_SECONDS)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the cap and the deadlines (see ``protocol_for``)."""

    guard: ClassVar[ConnectionGuard]
    _phase: str = ""
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(  # type: ignore[override]
            self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        if self.guard.admit(self):
            self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter("")
        self.guard.release(self)
        super().connection_lost(exc)

    def drop(self) -> None:
        self._enter("")
        self.guard.release(self)
        self.transport.close()

    def _follow(self) -> None:
        """Arm the deadline of what the client owes now: a request head or a body."""
        state = self.conn.their_state
        if self.transport.is_closing():
            self._enter("")
        elif state is h11.IDLE:
            self._enter("head")
        elif state is h11.SEND_BODY:
            self._enter("body")
        else:
            self._enter("")

    def _enter(self, phase: str) -> None:
        if phase == self._phase:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = phase
        if phase == "head":
            self.guard.waiting[self] = None
        else:
            self.guard.waiting.pop(self, None)
        limits = self.guard.limits
        if phase:
            seconds = limits.header_timeout if phase == "head" else self._body_seconds()
            self._deadline = self.loop.call_later(seconds, self._expire, phase, seconds)

    def _body_seconds(self) -> float:
        length = dict(self.headers or []).get(b"content-length", b"")
        return body_seconds(self.guard.limits.body_timeout, length)

    def _expire(self, phase: str, seconds: float) -> None:
        self._deadline = None
        log.info("dropped a connection whose request %s took longer than %g s", phase, seconds)
        self.drop()


def protocol_for(limits: Limits) -> type[GuardedH11Protocol]:
    """A protocol class for one uvicorn server: uvicorn instantiates it per connection."""
    class RelayH11Protocol(GuardedH11Protocol):
        guard = ConnectionGuard(limits)

    return RelayH11Protocol
