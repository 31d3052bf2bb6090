"""``mailbridge serve``: the web form and the delivery worker in one asyncio loop.

uvicorn runs with everything that could identify a tipster switched off: no
access log, no ``Server``/``Date`` headers, no proxy headers (the client
address is read only by the rate limiter), and a log format without any
address field. Connections are capped and given deadlines (``connections.py``);
lines a client can trigger appear once a minute at most (``OncePerInterval``).
A busy port is a ``RuntimeFailure`` (exit 3, so systemd restarts), not a
configuration error. The relay database is upgraded at start. SIGTERM or SIGINT
stops accepting connections, lets open requests finish and the delivery
worker end its pass; a second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import logging.config
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from ..config import Settings
from ..errors import ConfigError, RuntimeFailure
from .connections import BACKLOG, HEAD_BYTES, Limits, fit_open_file_limit, protocol_for
from .outbox import DeliveryWorker
from .smtp import start_smtp
from .store import RelayStore
from .web import create_app

log = logging.getLogger(__name__)


class TracebackWithoutText(logging.Filter):
    """Keep a traceback's frames but not the exception's text: a library's message
    can quote what it was given (a tip, a header), and logs must never hold that."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            frames = "".join(traceback.format_tb(exc.__traceback__))
            record.exc_text = (f"Traceback (most recent call last):\n{frames}"
                               f"{type(exc).__module__}.{type(exc).__qualname__} "
                               f"(text withheld)")
            record.exc_info = None
        return True


# Loggers that clients can make speak: a bad request, a dropped connection, a failed accept.
CLIENT_LOGGERS = ("asyncio", "uvicorn", "mailbridge.relay.connections", "mailbridge.relay.web",
                  "mailbridge.relay.smtp")


class OncePerInterval(logging.Filter):
    """At most one line per kind (logger + first line of the message template) per
    interval from ``CLIENT_LOGGERS``; the next line shown counts those held back.

    A flood of bad requests or dropped connections must cost the journal one
    line a minute, not one per event (46 MB in 20 s before this).
    """

    def __init__(self, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._kinds: dict[tuple[str, str], tuple[float, int]] = {}  # last shown, held back
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not any(record.name == n or record.name.startswith(n + ".")
                   for n in CLIENT_LOGGERS):
            return True
        kind = (record.name, str(record.msg).partition("\n")[0][:200])
        now = self.clock()
        with self._lock:
            shown, held = self._kinds.get(kind, (-self.interval, 0))
            if now - shown < self.interval:
                self._kinds[kind] = (shown, held + 1)
                return False
            if len(self._kinds) > 1000:  # kinds are few; forget the stale ones
                self._kinds = {k: v for k, v in self._kinds.items()
                               if now - v[0] < self.interval}
            self._kinds[kind] = (now, 0)
        if held:
            record.msg = f"{record.msg} [and {held} more like it since the last one]"
        return True


# No formatter here knows a client address; uvicorn's access logger is silenced.
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    # One line per event, its priority in front when stderr is the journal (logs.py).
    "formatters": {"plain": {"()": "mailbridge.logs.JournalFormatter"}},
    "filters": {"no_exception_text": {"()": TracebackWithoutText},
                "once_per_minute": {"()": OncePerInterval}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                            "filters": ["once_per_minute", "no_exception_text"],
                            "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        "uvicorn": {"level": "INFO"},
        "alembic": {"level": "WARNING"},
        "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
    },
}


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``run_relay`` owns SIGTERM/SIGINT, so
    the delivery worker stops in the same orderly way as the web server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    """Listen with ``proto=IPPROTO_TCP`` explicitly: accepted sockets inherit it, and
    asyncio sets TCP_NODELAY only on sockets that say so. Without it every keep-alive
    response waits ~40 ms for a delayed ACK (Nagle)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        return sock
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:  # the other process may go away: systemd retries
            raise RuntimeFailure(
                f"cannot listen on {host}:{port} (relay.listen_host, relay.listen_port): the "
                f"port is in use; stop the process that holds it, or choose another "
                f"relay.listen_port") from exc
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}): choose a relay.listen_host "
            f"this machine has and a relay.listen_port this user may bind") from exc


async def run_relay(settings: Settings, *, ready: Callable[[int], None] | None = None,
                    stop: asyncio.Event | None = None, handle_signals: bool = False) -> None:
    """Serve the form and deliver the outbox until *stop* is set (or a signal arrives).

    *ready* is called with the bound port once requests are answered (port 0 in
    ``relay.listen_port`` picks a free one, for tests).
    """
    stop = stop or asyncio.Event()
    store = RelayStore(settings.relay.database,
                       conversation_days=settings.relay.conversation_days,
                       outbox_days=settings.relay.outbox_days)
    try:
        await asyncio.to_thread(store.upgrade)
        worker = DeliveryWorker(settings, store)
        app = create_app(settings, store, on_accepted=worker.wake)
        relay = settings.relay
        limits = Limits(fit_open_file_limit(relay.max_connections),
                        relay.header_timeout_seconds, relay.body_timeout_seconds)
        config = uvicorn.Config(
            app, access_log=False, server_header=False, date_header=False,
            proxy_headers=False, forwarded_allow_ips="", log_config=None, lifespan="off",
            ws="none", timeout_graceful_shutdown=10, http=protocol_for(limits),
            backlog=BACKLOG, h11_max_incomplete_event_size=HEAD_BYTES,
            timeout_keep_alive=5)  # an idle keep-alive connection goes after 5 s
        server = _Server(config)
        sock = _bind(settings.relay.listen_host, settings.relay.listen_port)
        try:  # the SMTP intake of replies, when relay.smtp_listen is set
            smtp = await start_smtp(settings, store, worker.wake)
        except BaseException:
            sock.close()
            raise
        if handle_signals:
            _install_signals(stop, server)
        worker_task = asyncio.create_task(worker.run(stop), name="delivery")
        server_task = asyncio.create_task(server.serve(sockets=[sock]), name="web")
        while not server.started and not server_task.done():
            await asyncio.sleep(0.01)
        if server.started:
            port = int(sock.getsockname()[1])
            log.info("relay listening on %s:%d", settings.relay.listen_host, port)
            if ready is not None:
                ready(port)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({server_task, worker_task, stopping},
                           return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        server.should_exit = True
        results = await asyncio.gather(server_task, worker_task, stopping,
                                       return_exceptions=True)
        sock.close()
        if smtp is not None:
            smtp.close()
            await smtp.wait_closed()
        for result in results:
            if isinstance(result, BaseException):
                raise result
    finally:
        store.close()
    log.info("relay stopped")


def _install_signals(stop: asyncio.Event, server: uvicorn.Server) -> None:
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            server.force_exit = True  # a second signal: do not wait for open requests
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)


def serve(settings: Settings) -> None:
    """Run the relay until SIGTERM or SIGINT (``mailbridge serve``)."""
    logging.config.dictConfig(LOG_CONFIG)
    asyncio.run(run_relay(settings, handle_signals=True))
