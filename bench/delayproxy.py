"""A userspace TCP proxy on 127.0.0.1 that adds latency, stalls, or says BYE.

Used by the poller tests (a server that stops mid-FETCH, or ends an IDLE session
the way Office 365 does) and by the poller benchmark (WAN round trips over
loopback). Runs its own asyncio loop in a thread; ``port`` is where clients
connect.

    with DelayProxy("127.0.0.1", 10143, delay=0.025) as proxy:   # 50 ms RTT
        IMAPClient("127.0.0.1", port=proxy.port)

A benchmark runs it in a process of its own (``DelayProxyProcess``), so that
forwarding never waits for the measured client's interpreter lock: a real
network does not share a CPU thread with the client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType


class DelayProxy:
    """Forward to (host, port), delaying each chunk by *delay* seconds each way.

    ``stall_after``: on the first connection only, stop forwarding server bytes
    after this many (the connection stays open: a stalled server).
    """

    def __init__(self, host: str, port: int, *, delay: float = 0.0,
                 stall_after: int | None = None) -> None:
        self.target = (host, port)
        self.delay = delay
        self.stall_after = stall_after
        self.port = 0
        self.connections = 0
        self._clients: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="delayproxy")
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        for writer in self._clients:
            writer.close()
        self._server.close()
        # Finish every pending task here: coroutines left for the garbage collector
        # would run their cleanup at an arbitrary moment in another thread.
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(self._server.wait_closed())
        self._loop.close()

    def inject(self, data: bytes, *, close: bool = True) -> None:
        """Send *data* to every connected client (e.g. ``* BYE ...``), then hang up."""
        def send() -> None:
            for writer in self._clients:
                writer.write(data)
                if close:
                    writer.close()
        self._loop.call_soon_threadsafe(send)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        stall = self.stall_after if self.connections == 1 else None
        self._clients.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        with contextlib.suppress(asyncio.CancelledError):  # shutting down: end quietly
            await asyncio.gather(self._pipe(reader, up_writer, None),
                                 self._pipe(up_reader, writer, stall), return_exceptions=True)
        for w in (writer, up_writer):
            w.close()
        if writer in self._clients:
            self._clients.remove(writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    stall_after: int | None) -> None:
        """Latency without a bandwidth cap: each chunk is due *delay* after it arrived."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + self.delay, data))
            queue.put_nowait((loop.time() + self.delay, b""))

        task = asyncio.ensure_future(read())
        sent = 0
        try:
            while True:
                due, data = await queue.get()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if not data:
                    break
                if stall_after is not None and sent + len(data) > stall_after:
                    writer.write(data[: max(0, stall_after - sent)])
                    await asyncio.Event().wait()  # stalled: never forward again
                writer.write(data)
                sent += len(data)
                await writer.drain()
        finally:
            task.cancel()
            writer.close()


class DelayProxyProcess:
    """``DelayProxy`` in a child process (``python -m bench.delayproxy``); ends with stdin."""

    def __init__(self, host: str, port: int, *, delay: float) -> None:
        self.args = [sys.executable, "-m", "bench.delayproxy", host, str(port), str(delay)]
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> DelayProxyProcess:
        self._proc = subprocess.Popen(
            self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[1])
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.close()
            self._proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description="Forward with a delay until stdin closes.")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("delay", type=float, help="seconds each way")
    args = parser.parse_args()
    with DelayProxy(args.host, args.port, delay=args.delay) as proxy:
        print(proxy.port, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
