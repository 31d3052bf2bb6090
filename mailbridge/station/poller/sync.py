"""Keeping the ledger in step with one station's IMAP folders.

Per folder the ledger keeps UIDVALIDITY, the last UID indexed, HIGHESTMODSEQ,
UIDNEXT and the message count. A poll asks STATUS first: when nothing moved,
that one command is the whole poll. Otherwise the folder is EXAMINEd and:
- new UIDs (``UID SEARCH UID last+1:*``, filtered: servers answer with the max
  UID even when it is lower) are fetched in chunks; each chunk is indexed and
  committed together with the advanced cursor (fetch, parse and commit of
  successive chunks overlap; a long first index parses in other processes,
  see ``worker``); a chunk's messages and bytes follow ``ledger.memory_mb``
  (``budget``), its bytes bounded by size classes from ``SEARCH LARGER``;
- messages over the last size class are fetched alone, and over
  ``ledger.max_message_bytes`` only their header (placeholder rows);
- flag changes come from ``CHANGEDSINCE`` (CONDSTORE), expunges from
  ``VANISHED`` (QRESYNC); without them, from a FLAGS diff and a UID diff;
- a changed UIDVALIDITY retires the old UIDs and re-binds messages by
  Message-ID, fetching only headers, so no tip is ever created twice.
"""

from __future__ import annotations

import logging
import time
from array import array
from collections import deque
from collections.abc import Callable, Collection, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice
from typing import TypeVar

from ...core.message import RelayIdentity, message_ids
from ...errors import LedgerError, PollError
from ..ledger.store import LedgerStore
from ..records import Counts, Cursor, Fetched
from .budget import ALONE, SIZE_CLASSES, batches_for, holds, parsers_for
from .imap import FolderInfo, ImapConnection, folder_name
from .index import decode_header_value
from .parse import RawMessage
from .worker import Parser

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
FLAG_CHUNK = 5000
IDLE_RENEW = 9 * 60.0   # renew IDLE well inside the 29-minute rule (RFC 2177)
Progress = Callable[[str, int, int], None]  # folder, done, total
FETCH_AHEAD = 3         # chunks fetched ahead of the one being handed to the parser
DEFAULT_MEMORY_MB = 160  # ledger.memory_mb
PARALLEL_FROM = 2000    # new messages in a folder from which parsing gets worker processes


@dataclass
class Backoff:
    """Reconnect delays: 1, 2, 4 ... 60 s, reset after a successful poll."""

    first: float = 1.0
    limit: float = 60.0
    current: float = field(default=0.0)

    def next(self) -> float:
        self.current = min(self.limit, self.current * 2 if self.current else self.first)
        return self.current

    def reset(self) -> None:
        self.current = 0.0


class ImapPoller:
    """Indexes the configured folders of one station mailbox into the ledger."""

    def __init__(self, conn: ImapConnection, store: LedgerStore, *, relay: RelayIdentity,
                 max_message_bytes: int, progress: Progress | None = None,
                 decrypt: Callable[[bytes], bytes] | None = None,
                 memory_mb: int = DEFAULT_MEMORY_MB) -> None:
        self.conn = conn
        self.store = store
        self.relay = relay
        self.decrypt = decrypt
        self.max_bytes = max_message_bytes
        self.folders = [folder_name(f) for f in conn.settings.folders]
        self.progress = progress
        self.parallel_from = PARALLEL_FROM
        self.parser_processes = parsers_for(memory_mb)
        self.batches = batches_for(memory_mb)

    # -- one poll -------------------------------------------------------------------

    def poll(self, changed: Collection[str] = ()) -> Counts:
        """Bring every folder up to date; connects first if needed.

        *changed*: folders IDLE already reported as changed (no STATUS for them).
        """
        if self.conn.client is None:
            self.conn.connect()
        counts = Counts()
        for folder in self.folders:
            counts.add(self.sync_folder(folder, changed=folder in changed))
        return counts

    def sync_folder(self, folder: str, *, changed: bool = False) -> Counts:
        conn, store = self.conn, self.store
        counts = Counts()
        cur = store.cursor(folder)
        # STATUS tells whether anything moved. Not needed when IDLE just said so (and
        # on the selected folder it makes Dovecot re-read a big Maildir: 0.1-0.2 s at
        # 100k messages), nor before a first index, which has nothing to compare.
        if cur.uidvalidity and not changed:
            st = conn.status(folder)
            # Without CONDSTORE a flag change shows in no counter: then always diff FLAGS.
            if (conn.condstore and cur.uidvalidity == st.uidvalidity
                    and cur.uidnext == st.uidnext and cur.message_count == st.messages
                    and cur.highestmodseq == st.highestmodseq):
                return counts
        sel = conn.examine(folder)
        rebinding = bool(cur.uidvalidity) and cur.uidvalidity != sel.uidvalidity
        if rebinding:
            log.warning("%s: UIDVALIDITY of %s changed %d -> %d: re-binding by Message-ID",
                        store.station, folder, cur.uidvalidity, sel.uidvalidity)
            store.start_rebind(folder, cur.uidvalidity, sel.uidvalidity)
            cur = Cursor(uidvalidity=sel.uidvalidity)
        known_before = cur.last_uid
        new = _uids(())
        if rebinding or not cur.last_uid or sel.uidnext > cur.last_uid + 1:
            new = _uids(u for u in conn.search("UID", f"{cur.last_uid + 1}:*")
                        if u > cur.last_uid)
        if new:
            counts.add(self._index_new(folder, sel.uidvalidity, new, rebinding))
        if known_before:
            counts.add(self._changes(folder, sel, cur))
        if store.live_count(folder, sel.uidvalidity) != sel.messages:
            server = set(conn.search("ALL"))
            gone = set(store.live_flags(folder, sel.uidvalidity)) - server
            if gone:
                counts.add(store.mark_gone(folder, sel.uidvalidity, gone))
        store.finish(folder, Cursor(sel.uidvalidity, max(cur.last_uid, new[-1] if new else 0),
                                    sel.highestmodseq, sel.uidnext, sel.messages))
        if rebinding and counts.rebound < 0.8 * (counts.rebound + counts.new):
            log.warning("%s: only %d of %d messages in %s re-bound after the UIDVALIDITY "
                        "change; the others were indexed as new (no new tips for known refs)",
                        store.station, counts.rebound, counts.rebound + counts.new, folder)
        return counts

    def _changes(self, folder: str, sel: FolderInfo, cur: Cursor) -> Counts:
        """Flag changes and expunges among the messages indexed before this poll."""
        counts = Counts()
        conn = self.conn
        if conn.condstore and cur.highestmodseq:
            if sel.highestmodseq == cur.highestmodseq:
                return counts
            modifiers = [f"CHANGEDSINCE {cur.highestmodseq}"]
            if conn.qresync:
                modifiers.append("VANISHED")
            data, vanished = conn.fetch(f"1:{cur.last_uid}", ["UID", "FLAGS"], modifiers)
            changed = {uid: tuple(_text(f) for f in d.get(b"FLAGS", ())) for uid, d in data.items()}
            counts.add(self.store.set_flags(folder, sel.uidvalidity, changed))
            if vanished:
                counts.add(self.store.mark_gone(folder, sel.uidvalidity, vanished))
            return counts
        live = sorted(self.store.live_flags(folder, sel.uidvalidity))
        changed = {}
        for i in range(0, len(live), FLAG_CHUNK):
            data, _v = conn.fetch(live[i:i + FLAG_CHUNK], ["UID", "FLAGS"])
            changed.update({uid: tuple(_text(f) for f in d.get(b"FLAGS", ()))
                            for uid, d in data.items()})
        counts.add(self.store.set_flags(folder, sel.uidvalidity, changed))
        return counts

    # -- new messages ---------------------------------------------------------------

    def _index_new(self, folder: str, uidvalidity: int, uids: Sequence[int],
                   rebinding: bool) -> Counts:
        """A pipeline: fetch the next chunk while earlier ones parse and the oldest commits.

        Fetching runs in a thread (network waits release the GIL). A long first
        index parses in worker processes, several chunks at once, while this
        thread commits; a short poll parses in-process (no start-up cost).
        Commits stay in order, one transaction per chunk, cursor included.
        """
        counts = Counts()
        larger = self._larger(uids)
        big = larger[-1]
        chunks = self.batches.chunks(uids, larger, self.max_bytes)
        workers = self.parser_processes if len(uids) >= self.parallel_from else 0
        parsing: deque[tuple[Sequence[int], Callable[[], list[Fetched]]]] = deque()
        done = 0

        def commit_oldest() -> None:
            nonlocal done
            chunk, parsed = parsing.popleft()
            counts.add(self.store.add_batch(folder, uidvalidity, parsed(), chunk[-1],
                                            rebinding=rebinding))
            done += len(chunk)
            if self.progress:
                self.progress(folder, done, len(uids))

        with Parser(self.relay, workers, self.decrypt) as parser, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap-fetch") as pool, \
                closing(_in_order(pool, lambda c: self._fetch_chunk(c, big, rebinding),
                                  chunks, ahead=FETCH_AHEAD)) as fetched_chunks:
            for chunk, fetched in fetched_chunks:
                parsing.append((chunk, parser.submit(fetched)))
                if len(parsing) > parser.depth:
                    commit_oldest()
            while parsing:
                commit_oldest()
        return counts

    def _larger(self, uids: Sequence[int]) -> list[Sequence[int]]:
        """Per size class, the new UIDs above it (ascending), for ``Batches.chunks``.

        The smaller classes are asked only when the new mail could overflow a chunk's
        bytes at all; the last one always (its messages are fetched alone).
        """
        def above(limit: int) -> Sequence[int]:
            return _uids(u for u in self.conn.search("UID", f"{uids[0]}:*", "LARGER", str(limit))
                         if holds(uids, u))
        small = len(uids) * ALONE <= self.batches.bytes
        return [_uids(()) if small else above(c) for c in SIZE_CLASSES[:-1]] + [above(ALONE)]

    def _fetch_chunk(self, chunk: Sequence[int], big: Sequence[int],
                     rebinding: bool) -> list[Fetched | RawMessage]:
        """Network only (runs in the fetch thread); parsing happens elsewhere."""
        conn = self.conn
        items: list[Fetched | RawMessage] = []
        todo = list(chunk)
        extra = ["MODSEQ"] if conn.condstore else []
        if rebinding:
            data, _v = conn.fetch(chunk, ["UID", "FLAGS", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]",
                                          *extra])
            ids = {uid: _header_id(d) for uid, d in data.items()}
            known = self.store.known_ids([m for m in ids.values() if m])
            for uid, d in data.items():
                if ids[uid] in known:
                    items.append(Fetched(uid, _flags(d), ids[uid], modseq=_modseq(d)))
            todo = [u for u in chunk if u in data and ids[u] not in known]
        small = [u for u in todo if not holds(big, u)]
        data, _v = conn.fetch(small, ["UID", "FLAGS", "BODY.PEEK[]", *extra])
        for uid in small:
            if uid in data:
                d = data[uid]
                items.append((uid, _flags(d), _modseq(d), _body(d), None, False))
        for uid in (u for u in todo if holds(big, u)):
            items.extend(self._fetch_big(uid, extra))
        return items

    def _fetch_big(self, uid: int, extra: list[str]) -> list[RawMessage]:
        data, _v = self.conn.fetch([uid], ["UID", "FLAGS", "RFC822.SIZE", *extra])
        if uid not in data:
            return []
        size = int(data[uid].get(b"RFC822.SIZE", 0))
        flags, modseq = _flags(data[uid]), _modseq(data[uid])
        if size > self.max_bytes:
            head, _v = self.conn.fetch([uid], ["UID", "BODY.PEEK[HEADER]"])
            raw = head.get(uid, {}).get(b"BODY[HEADER]", b"") or b""
            return [(uid, flags, modseq, raw, size, True)]
        body, _v = self.conn.fetch([uid], ["UID", "BODY.PEEK[]"])
        if uid not in body:
            return []
        return [(uid, flags, modseq, _body(body[uid]), None, False)]

    # -- forever --------------------------------------------------------------------

    def run_forever(self, *, stop: Callable[[], bool], report: Callable[[Counts], None],
                    idle_renew: float = IDLE_RENEW, poll_interval: float = 60.0) -> None:
        """Poll, then IDLE on the first folder and poll again on every change or renewal.

        IDLE sees one folder; with more configured (a sent folder for officers'
        replies), the renewal comes every *poll_interval* so they are checked
        that often (a STATUS each when nothing moved). Failures reconnect with
        backoff; nothing here spins on a dead socket.
        """
        backoff = Backoff()
        if len(self.folders) > 1:
            idle_renew = min(idle_renew, poll_interval)
        try:
            self._run(stop, report, idle_renew, poll_interval, backoff)
        finally:
            self.conn.close()  # a stopped poller leaves no connection (nor its socket) behind

    def _run(self, stop: Callable[[], bool], report: Callable[[Counts], None],
             idle_renew: float, poll_interval: float, backoff: Backoff) -> None:
        while not stop():
            try:
                report(self.poll())
                backoff.reset()
                while not stop():
                    changed: set[str] = set()
                    if self.conn.idle_ok:
                        if self.conn.selected != self.folders[0]:
                            self.conn.examine(self.folders[0])
                        if self.conn.idle_wait(idle_renew):
                            changed.add(self.folders[0])
                    else:
                        time.sleep(poll_interval)
                    report(self.poll(changed))
            except (PollError, LedgerError) as exc:
                self.conn.close()
                delay = backoff.next()
                log.warning("%s: %s; reconnecting in %.0f s", self.store.station, exc, delay)
                time.sleep(delay)


def _in_order(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], *,
              ahead: int) -> Generator[tuple[T, R], None, None]:
    """``(item, fn(item))`` for each item, in order, ``fn`` run in *pool* up to *ahead*
    items early.

    So the fetch thread streams chunk after chunk while earlier ones are parsed
    and committed; memory stays bounded by *ahead* chunks. Closing it early (an
    error downstream) cancels the fetches not yet started.
    """
    pending: deque[tuple[T, Future[R]]] = deque()
    rest = iter(items)
    try:
        for item in islice(rest, ahead):
            pending.append((item, pool.submit(fn, item)))
        while pending:
            item, future = pending.popleft()
            result = future.result()
            for later in islice(rest, 1):
                pending.append((later, pool.submit(fn, later)))
            yield item, result
    finally:
        for _item, future in pending:
            future.cancel()


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _flags(d: dict[bytes, object]) -> tuple[str, ...]:
    flags = d.get(b"FLAGS", ())
    return tuple(_text(f) for f in flags) if isinstance(flags, tuple | list) else ()


def _modseq(d: dict[bytes, object]) -> int:
    value = d.get(b"MODSEQ")
    if isinstance(value, tuple | list) and value:
        return int(value[0])
    return int(value) if isinstance(value, int) else 0


def _body(d: dict[bytes, object]) -> bytes:
    raw = d.get(b"BODY[]")
    return raw if isinstance(raw, bytes) else b""


def _header_id(d: dict[bytes, object]) -> str:
    raw = next((v for k, v in d.items() if k.startswith(b"BODY[HEADER")), b"")
    if not isinstance(raw, bytes):
        return ""
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    value = text.partition(":")[2] if ":" in text else ""
    decoded, _problem = decode_header_value(value.replace("\n", " "))
    found = message_ids(decoded)
    return found[0] if found else ""


def _uids(values: Iterable[int]) -> Sequence[int]:
    """UIDs as 32-bit numbers in an array: 4 bytes each, not a Python int's 32 and a
    list's 8 (a first index of 100,000 messages holds several such lists)."""
    return array("I", values)
