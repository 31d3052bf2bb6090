"""Indexing a Maildir directly: the demo's mailbox, with no mail server in between.

Same index and store code as the IMAP poller. A Maildir has no UIDs, so a
message's UID is derived from its unique file name (the part before ``:2,``),
which survives the move from ``new/`` to ``cur/`` and flag changes; UIDVALIDITY
is fixed. Flags come from the ``:2,`` suffix (S seen, F flagged, R answered,
T trashed, D draft). Sub-folders use the Maildir++ layout (``.Sent`` -> Sent).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...core.message import RelayIdentity
from ..ledger.store import LedgerStore, flag_text
from ..records import Counts, Fetched
from .index import index_message

UIDVALIDITY = 1
CHUNK = 250
HEADER_LIMIT = 256 * 1024
FLAG_LETTERS = {"S": "\\Seen", "F": "\\Flagged", "R": "\\Answered", "T": "\\Deleted",
                "D": "\\Draft", "P": "$Forwarded"}


def uid_of(unique_name: str) -> int:
    """A stable 60-bit UID for a Maildir file name (fits every SQL BIGINT)."""
    return int(hashlib.sha256(unique_name.encode("utf-8", "surrogateescape")).hexdigest()[:15], 16)


def parse_name(name: str) -> tuple[str, tuple[str, ...]]:
    """``1700.M1P2.host:2,FS`` -> (``1700.M1P2.host``, (\\Flagged, \\Seen))."""
    unique, _sep, info = name.partition(":")
    flags: tuple[str, ...] = ()
    if info.startswith("2,"):
        flags = tuple(FLAG_LETTERS[c] for c in info[2:] if c in FLAG_LETTERS)
    return unique, flags


@dataclass(frozen=True)
class _File:
    path: Path
    flags: tuple[str, ...]
    mtime: float


def _header(path: Path) -> bytes:
    with path.open("rb") as fh:
        head = fh.read(HEADER_LIMIT)
    for sep in (b"\r\n\r\n", b"\n\n"):
        if sep in head:
            return head[: head.index(sep) + len(sep)]
    return head


class MaildirPoller:
    """Indexes a Maildir (and its Maildir++ sub-folders) into the ledger."""

    def __init__(self, root: Path, store: LedgerStore, *, relay: RelayIdentity,
                 max_message_bytes: int,
                 decrypt: Callable[[bytes], bytes] | None = None) -> None:
        self.root = root
        self.store = store
        self.relay = relay
        self.decrypt = decrypt
        self.max_bytes = max_message_bytes

    def folders(self) -> list[tuple[str, Path]]:
        found = [("INBOX", self.root)]
        if self.root.is_dir():
            for entry in sorted(self.root.iterdir()):
                if entry.name.startswith(".") and (entry / "cur").is_dir():
                    found.append((entry.name[1:].replace(".", "/"), entry))
        return found

    def poll(self, progress: Callable[[str, int, int], None] | None = None) -> Counts:
        counts = Counts()
        for folder, path in self.folders():
            counts.add(self.sync_folder(folder, path, progress))
        return counts

    def _scan(self, path: Path) -> dict[int, _File]:
        files: dict[int, _File] = {}
        for sub in ("new", "cur"):
            try:
                entries = list(os.scandir(path / sub))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                unique, flags = parse_name(entry.name)
                try:
                    mtime = entry.stat().st_mtime
                except FileNotFoundError:
                    continue
                files[uid_of(unique)] = _File(Path(entry.path), flags, mtime)
        return files

    def sync_folder(self, folder: str, path: Path,
                    progress: Callable[[str, int, int], None] | None = None) -> Counts:
        store = self.store
        counts = Counts()
        files = self._scan(path)
        live = store.live_flags(folder, UIDVALIDITY)
        new = sorted(set(files) - set(live), key=lambda u: (files[u].mtime, files[u].path.name))
        for i in range(0, len(new), CHUNK):
            items = [f for f in (self._read(uid, files[uid]) for uid in new[i:i + CHUNK]) if f]
            counts.add(store.add_batch(folder, UIDVALIDITY, items, 0))
            if progress:
                progress(folder, i + CHUNK, len(new))
        changed = {uid: files[uid].flags for uid in set(files) & set(live)
                   if flag_text(files[uid].flags) != live[uid]}
        if changed:
            counts.add(store.set_flags(folder, UIDVALIDITY, changed))
        gone = set(live) - set(files)
        if gone:
            counts.add(store.mark_gone(folder, UIDVALIDITY, gone))
        return counts

    def _read(self, uid: int, f: _File) -> Fetched | None:
        try:
            size = f.path.stat().st_size
            if size > self.max_bytes:
                raw = _header(f.path)
                ind = index_message(raw, relay=self.relay, size=size,
                                    headers_only=True)
            else:
                raw = f.path.read_bytes()
                ind = index_message(raw, relay=self.relay, decrypt=self.decrypt)
        except FileNotFoundError:
            return None  # moved new/ -> cur/ meanwhile: the next poll sees it there
        return Fetched(uid, f.flags, ind.message_id, ind, raw if ind.problems else None)
