"""Parsing fetched chunks in other processes, so a long first index uses two cores.

Each parser process is ``python -m mailbridge.station.poller.parse`` (``parse.py``:
it imports only what parsing needs), a plain child process over two private pipes
rather than ``multiprocessing``, which would re-import the caller's main script in
the child. Nothing here touches the ledger: commits stay in the poller, in order,
one transaction per chunk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...core.message import RelayIdentity
from ..records import Fetched
from . import parse
from .parse import Chunk, parse_all

log = logging.getLogger(__name__)


class Parser:
    """Parses chunks in worker processes, or in-process when not worth it or broken.

    ``submit`` returns at once; calling its result waits. Chunk k goes to worker
    k mod n, and each worker holds one chunk at a time, so ``depth`` chunks parse
    side by side while the caller commits. If a worker cannot start or dies, its
    chunks are parsed here: a slower index, never a lost message. A station that
    decrypts (*decrypt*) parses here too: its key stays in this process, and gpg
    does the work of each message in a process of its own anyway.
    """

    def __init__(self, relay: RelayIdentity, workers: int,
                 decrypt: Callable[[bytes], bytes] | None = None) -> None:
        self.relay = relay
        self.decrypt = decrypt
        self.workers: list[_Worker] = []
        for _ in range(0 if decrypt else workers):
            try:
                self.workers.append(_Worker())
            except OSError as exc:
                log.warning("cannot start a parser process (%s); parsing with fewer", exc)
                break
        self._turn = 0

    @property
    def depth(self) -> int:
        """How many submitted chunks can be parsing at once."""
        return max(1, len(self.workers))

    def __enter__(self) -> Parser:
        return self

    def __exit__(self, *_exc: object) -> None:
        for worker in self.workers:
            worker.close()

    def submit(self, fetched: Chunk) -> Callable[[], list[Fetched]]:
        live = [w for w in self.workers if w.proc is not None]
        if not live:
            return lambda: parse_all(fetched, self.relay, self.decrypt)
        worker = live[self._turn % len(live)]
        self._turn += 1
        future = worker.io.submit(worker.round_trip, fetched, self.relay)

        def result() -> list[Fetched]:
            parsed = future.result()
            return parsed if parsed is not None else parse_all(fetched, self.relay)
        return result


class _Worker:
    """One parser process and the thread that talks to it (one chunk at a time)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(  # noqa: S603 - this module
            [sys.executable, "-m", parse.__name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=_child_env())
        self.io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parse-io")

    def round_trip(self, fetched: Chunk, relay: RelayIdentity) -> list[Fetched] | None:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            return None
        try:
            pickle.dump((fetched, relay), proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.flush()
            parsed: list[Fetched] = pickle.load(proc.stdout)  # noqa: S301 - own child's pipe
            return parsed
        except (OSError, EOFError, ValueError, pickle.PickleError) as exc:
            log.warning("a parser process stopped (%s); parsing its chunks in-process", exc)
            self._stop()
            return None

    def close(self) -> None:
        self.io.shutdown(wait=True, cancel_futures=True)
        self._stop()

    def _stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a dead worker's pipe cannot flush
                    pipe.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _child_env() -> dict[str, str]:
    """This environment, with the directory holding this copy of mailbridge importable."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env
