"""``mailbridge serve``: the web form and the delivery worker.

With ``relay.workers`` 1, one process and one asyncio loop serve the form and deliver.
With N > 1 (``run_workers``) the process binds one socket per worker on the port
(``SO_REUSEPORT``: the kernel spreads new connections across them), then forks N web
workers that share the relay database; the delivery worker and the SMTP intake stay in
the parent, which each worker's accepted tip wakes through a pipe. Workers die with
the parent; a worker that dies on its own stops the whole relay (exit 3), so systemd
restarts it whole instead of leaving it half alive.

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
import atexit
import contextlib
import ctypes
import dataclasses
import errno
import gc
import logging
import logging.config
import math
import multiprocessing
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import uvicorn
from starlette.applications import Starlette

from ..config import Settings
from ..errors import ConfigError, MailbridgeError, RuntimeFailure
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


def _bind(host: str, port: int, *, listen: bool = True,
          shared: bool = False) -> socket.socket:
    """Listen with ``proto=IPPROTO_TCP`` explicitly: accepted sockets inherit it, and
    asyncio sets TCP_NODELAY only on sockets that say so. Without it every keep-alive
    response waits ~40 ms for a delayed ACK (Nagle). *shared*: one of several sockets
    on the port (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
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


def _store(settings: Settings) -> RelayStore:
    return RelayStore(settings.relay.database,
                      conversation_days=settings.relay.conversation_days,
                      outbox_days=settings.relay.outbox_days)


def _web_server(settings: Settings, app: Starlette) -> _Server:
    relay = settings.relay
    limits = Limits(fit_open_file_limit(relay.max_connections),
                    relay.header_timeout_seconds, relay.body_timeout_seconds)
    config = uvicorn.Config(
        app, access_log=False, server_header=False, date_header=False,
        proxy_headers=False, forwarded_allow_ips="", log_config=None, lifespan="off",
        ws="none", timeout_graceful_shutdown=10, http=protocol_for(limits),
        backlog=BACKLOG, h11_max_incomplete_event_size=HEAD_BYTES,
        timeout_keep_alive=5)  # an idle keep-alive connection goes after 5 s
    return _Server(config)


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    """Wait until *server* answers requests; False when it ended first."""
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    return bool(server.started)


async def run_relay(settings: Settings, *, ready: Callable[[int], None] | None = None,
                    stop: asyncio.Event | None = None, handle_signals: bool = False) -> None:
    """Serve the form and deliver the outbox until *stop* is set (or a signal arrives).

    *ready* is called with the bound port once requests are answered (port 0 in
    ``relay.listen_port`` picks a free one, for tests).
    """
    stop = stop or asyncio.Event()
    store = _store(settings)
    try:
        await asyncio.to_thread(store.upgrade)
        worker = DeliveryWorker(settings, store)
        server = _web_server(settings, create_app(settings, store, on_accepted=worker.wake))
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
        if await _started(server, server_task):
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


# What a web worker tells the parent, one byte each, on its own pipe.
SERVING, ACCEPTED = b"s", b"a"
PR_SET_PDEATHSIG = 1


@dataclass
class _Worker:
    """A forked web worker as the parent sees it: its pipe and its pidfd."""

    number: int
    pid: int
    pipe: int
    pidfd: int
    status: int | None = None  # os.waitpid's, once it has ended

    def close(self) -> None:
        for fd in (self.pipe, self.pidfd):
            with contextlib.suppress(OSError):
                os.close(fd)


def per_worker(settings: Settings) -> Settings:
    """A worker's share of what must stay a total across workers: receipt-code lookups
    of all networks together (rounded up). The other limits are per worker (docs)."""
    relay = settings.relay
    share = math.ceil(relay.status_lookups_total_per_hour / relay.workers)
    return dataclasses.replace(settings, relay=dataclasses.replace(
        relay, status_lookups_total_per_hour=share))


def run_workers(settings: Settings, *, ready: Callable[[int], None] | None = None) -> None:
    """``relay.workers`` web workers on one port, delivery and SMTP in this process.

    Each worker listens on a socket of its own, all bound to the port with
    ``SO_REUSEPORT``, so the kernel spreads connections across the workers. On one
    shared socket, the worker that woke first took a whole burst of connections, and a
    proxy's or a client's keep-alive connections (each carries many tips) could all end
    up in one worker while the other idled. The port is first bound alone, without the
    option, so that one held by any other process (another relay too) is still an error.

    The schema is upgraded and the sockets bound before the first fork, and no thread or
    event loop exists yet, so a worker inherits nothing but imported code, the logging
    setup (its no-address formatter and filters) and its socket. *ready* is called with
    the port once every worker answers requests.
    """
    store = _store(settings)
    try:
        store.upgrade()
    finally:
        store.close()
    host = settings.relay.listen_host
    with _bind(host, settings.relay.listen_port, listen=False) as alone:
        port = int(alone.getsockname()[1])
    socks: list[socket.socket] = []
    workers: list[_Worker] = []
    in_flight = multiprocessing.Value(ctypes.c_int, 0)  # every worker's tips in flight
    try:
        gc.freeze()  # what is imported stays shared: the collector never touches its pages
        socks.extend(_bind(host, port, shared=True) for _ in range(settings.relay.workers))
        share = per_worker(settings)
        for number, sock in enumerate(socks, start=1):
            workers.append(_fork(share, sock, number, workers, in_flight, socks))
        for sock in socks:  # the workers hold them: once all are gone, connections are refused
            sock.close()
        asyncio.run(_supervise(settings, workers, port, ready))
    finally:
        for sock in socks:
            sock.close()
        for worker in workers:  # after a failure in this process: none may outlive it
            if worker.status is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
                os.waitpid(worker.pid, 0)
            worker.close()
    log.info("relay stopped")


def _fork(settings: Settings, sock: socket.socket, number: int, earlier: list[_Worker],
          in_flight: Synchronized[int], listening: list[socket.socket]) -> _Worker:
    read_end, write_end = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 4
        try:
            os.close(read_end)
            for other in earlier:
                other.close()
            for other_socket in listening:  # a worker accepts on its own socket only
                if other_socket is not sock:
                    other_socket.close()
            _die_with(parent)
            os.set_blocking(write_end, False)
            code = _worker_main(settings, sock, number, write_end, in_flight)
        finally:
            atexit._run_exitfuncs()  # e.g. a station's gpg keyring, named by this pid
            os._exit(code)
    os.close(write_end)
    os.set_blocking(read_end, False)
    return _Worker(number, pid, read_end, os.pidfd_open(pid))


def _die_with(parent: int) -> None:
    """SIGTERM when the parent dies, however it dies (it cannot stop us any more)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(settings: Settings, sock: socket.socket, number: int, pipe: int,
                 in_flight: Synchronized[int]) -> int:
    """A web worker's life; its exit status (as the command's: 3 a failure, 4 a bug)."""
    try:
        asyncio.run(_serve_web(settings, sock, pipe, in_flight))
    except MailbridgeError as exc:
        log.error("relay worker %d: %s", number, exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
    except BaseException:
        log.exception("relay worker %d hit a bug", number)
        return 4
    return 0


def _tell(pipe: int, what: bytes) -> None:
    """One byte to the parent; a full pipe already holds a wake-up, a closed one has
    nobody left to read it."""
    with contextlib.suppress(BlockingIOError, BrokenPipeError):
        os.write(pipe, what)


async def _serve_web(settings: Settings, sock: socket.socket, pipe: int,
                     in_flight: Synchronized[int]) -> None:
    """Serve the form on the inherited socket until SIGTERM or SIGINT (any number of
    them: the parent forwards one and systemd may send its own; it stops us at once
    with SIGKILL when asked twice), letting open requests finish."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = _store(settings)
    try:
        app = create_app(settings, store, on_accepted=lambda: _tell(pipe, ACCEPTED),
                         in_flight=in_flight)
        server = _web_server(settings, app)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="web")
        if await _started(server, task):
            _tell(pipe, SERVING)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        stopping.cancel()
        await task
    finally:
        store.close()


async def _supervise(settings: Settings, workers: list[_Worker], port: int,
                     ready: Callable[[int], None] | None) -> None:
    """Deliver and take SMTP mail while the workers serve; stop them all on a signal or
    when one of them ends on its own (then a ``RuntimeFailure`` naming it)."""
    loop = asyncio.get_running_loop()
    stop, ended = asyncio.Event(), asyncio.Event()
    serving: set[int] = set()
    failed: list[str] = []
    store = _store(settings)
    delivery = DeliveryWorker(settings, store)

    def heard(worker: _Worker) -> None:
        try:
            data = os.read(worker.pipe, 4096)
        except BlockingIOError:
            return
        if not data:
            loop.remove_reader(worker.pipe)
            return
        if ACCEPTED in data:
            delivery.wake()
        if SERVING in data:
            serving.add(worker.number)
            if len(serving) == len(workers):
                log.info("relay listening on %s:%d (%d workers)",
                         settings.relay.listen_host, port, len(workers))
                if ready is not None:
                    ready(port)

    def gone(worker: _Worker) -> None:
        loop.remove_reader(worker.pidfd)
        _, worker.status = os.waitpid(worker.pid, 0)
        if not stop.is_set():
            failed.append(f"relay worker {worker.number} of {len(workers)} (pid {worker.pid}) "
                          f"{_ended(worker.status)}: the other workers were stopped so that "
                          f"the whole relay restarts (systemd's Restart=)")
            stop.set()
        if all(w.status is not None for w in workers):
            ended.set()

    def on_signal() -> None:
        if stop.is_set():  # a second signal: do not wait for open requests
            for worker in workers:
                if worker.status is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGKILL)
        stop.set()

    for worker in workers:
        loop.add_reader(worker.pipe, heard, worker)
        loop.add_reader(worker.pidfd, gone, worker)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        smtp = await start_smtp(settings, store, delivery.wake)
        deliveries = asyncio.create_task(delivery.run(stop), name="delivery")
        await stop.wait()
        for worker in workers:
            if worker.status is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        await ended.wait()
        if smtp is not None:
            smtp.close()
            await smtp.wait_closed()
        await deliveries
    finally:
        store.close()
    if failed:
        raise RuntimeFailure(failed[0])


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def serve(settings: Settings) -> None:
    """Run the relay until SIGTERM or SIGINT (``mailbridge serve``)."""
    logging.config.dictConfig(LOG_CONFIG)
    if settings.relay.workers > 1:
        run_workers(settings)
    else:
        asyncio.run(run_relay(settings, handle_signals=True))
