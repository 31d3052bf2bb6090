"""The parser process of a long first index: pickled chunks in, parsed chunks out.

``python -m mailbridge.station.poller.parse`` reads pickled chunks on stdin and
writes the parsed chunks to stdout, one after the other, until stdin closes (so
it also ends when the poller is killed). It imports the email package, the
contract check and nothing else of the poller (no database, no config, no
logging, no threads): each such process is resident memory counted against
``ledger.memory_mb`` (``worker.py`` starts them and talks to them).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from collections.abc import Callable
from typing import IO

from ...core.message import RelayIdentity
from ..records import Fetched
from .index import index_message

# uid, flags, modseq, raw bytes, real size (when only the header was fetched), headers_only
RawMessage = tuple[int, tuple[str, ...], int, bytes, int | None, bool]
Chunk = list[Fetched | RawMessage]
# Parsers yield the CPU to the poller itself: its fetch thread is the pipeline's
# head, and a parser that falls behind only makes the poller wait a chunk.
NICE = 5


def parse_all(fetched: Chunk, relay: RelayIdentity,
              decrypt: Callable[[bytes], bytes] | None = None) -> list[Fetched]:
    """Index the raw messages of one chunk; already-known ones pass through. By UID."""
    items = [f for f in fetched if isinstance(f, Fetched)]
    for f in fetched:
        if isinstance(f, Fetched):
            continue
        uid, flags, modseq, raw, size, headers_only = f
        ind = index_message(raw, relay=relay, size=size,
                            headers_only=headers_only, decrypt=decrypt)
        items.append(Fetched(uid, flags, ind.message_id, ind, raw if ind.problems else None,
                             modseq))
    return sorted(items, key=lambda f: f.uid)


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The process's loop: one pickled chunk in, one pickled result out, until EOF."""
    while True:
        try:
            fetched, relay = pickle.load(stdin)  # noqa: S301 - the parent's private pipe
        except EOFError:
            return
        pickle.dump(parse_all(fetched, relay), stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()
        del fetched  # the next chunk's bytes are read before this loop's names rebind


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group: the poller decides, and closes our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(NICE)
    serve(sys.stdin.buffer, sys.stdout.buffer)
