"""What ``ledger.memory_mb`` buys a long first index: parser processes and batch sizes.

The poller's own process and its parser processes must stay inside the budget
together (docs/PERFORMANCE.md, "A small box", measured from outside with
``bench_poller --rss``). A parser process costs a fixed amount; what the poller
holds beyond its code is the messages in flight, a few chunks of them, so a
chunk's size follows the budget too. Pure: no I/O.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAX_WORKERS = 4
# Resident MiB at the peak of a first index with the default budget, measured from
# outside (81-85 and 26 at 20,000 and 100,000 messages): the poller's own process,
# and each parser process.
POLLER_MIB = 86
PARSER_MIB = 27
# A chunk holds one message per MiB of the budget, at most MAX_MESSAGES, and
# SLOT_BYTES of message bytes per message it may hold: mail up to the first size
# class fills it by count, bigger mail by bytes (counted at its class's bound).
MAX_MESSAGES = 250
SLOT_BYTES = 8 * 1024
SIZE_CLASSES = (SLOT_BYTES, 32 * 1024, 256 * 1024)
ALONE = SIZE_CLASSES[-1]  # above this a message is fetched on its own


def worker_count() -> int:
    """Parser processes for a long first index: one per usable core, at most ``MAX_WORKERS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def parsers_for(memory_mb: int, cores: int | None = None) -> int:
    """Parser processes that fit *memory_mb* beside the poller itself (ledger.memory_mb),
    at most one per usable core; 0 parses in the poller's own process."""
    fit = max(0, (memory_mb - POLLER_MIB) // PARSER_MIB)
    return min(fit, worker_count() if cores is None else min(MAX_WORKERS, cores))


@dataclass(frozen=True)
class Batches:
    """One chunk of a first index: one UID FETCH of its mail, one ledger commit."""

    messages: int   # at most this many messages
    bytes: int      # and this many message bytes, each counted at its size class's bound

    def chunks(self, uids: Sequence[int], larger: Sequence[Sequence[int]],
               alone_bytes: int) -> Iterator[Sequence[int]]:
        """*uids* (ascending) cut into chunks, in order.

        ``larger[k]`` holds the UIDs (ascending) bigger than ``SIZE_CLASSES[k]``;
        one bigger than every class counts *alone_bytes* (the most it may be) and
        so mostly makes a chunk of its own.
        """
        start, used = 0, 0
        for i, uid in enumerate(uids):
            bound = next((limit for limit, above in zip(SIZE_CLASSES, larger, strict=False)
                          if not holds(above, uid)), alone_bytes)
            if i > start and (i - start >= self.messages or used + bound > self.bytes):
                yield uids[start:i]
                start, used = i, 0
            used += bound
        if start < len(uids):
            yield uids[start:]


def batches_for(memory_mb: int) -> Batches:
    """Chunks for *memory_mb*: 160 (the default) holds 160 messages and 1.25 MiB."""
    messages = max(1, min(MAX_MESSAGES, memory_mb))
    return Batches(messages=messages, bytes=messages * SLOT_BYTES)


def holds(ascending: Sequence[int], value: int) -> bool:
    """Whether *value* is in *ascending* (sorted): a bisection, no set of Python ints."""
    i = bisect_left(ascending, value)
    return i < len(ascending) and ascending[i] == value
