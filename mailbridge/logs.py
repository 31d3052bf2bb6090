"""Log lines for the journal, for both roles: one line per event, with its priority.

journald makes one entry of each line a service writes and files it at ``info``
unless the line starts with a syslog priority (``<4>``). So when stderr is the journal
(``$JOURNAL_STREAM`` names it) every line starts with its level's priority, and
``journalctl -p warning`` finds the warnings; everywhere a message or a traceback
would break the line, `` | `` joins it, so an event is one entry, never a dozen. No
time stamp: the journal stamps each line (to the microsecond, which is why per-tip
lines stay at DEBUG: see docs/ARCHITECTURE.md, Logs). What a line may say is each
module's business; nothing here adds an address, a header or a text.
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(levelname)s %(name)s: %(message)s"
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
             logging.DEBUG: 7}


def stderr_is_journal() -> bool:
    """True when systemd connected stderr to the journal (``JOURNAL_STREAM`` is its
    device and inode, as sd_journal_stream_fd(3) says to check)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        info = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return bool(stream) and stream == f"{info.st_dev}:{info.st_ino}"


class JournalFormatter(logging.Formatter):
    """``LEVEL logger: message``, one line, with ``<N>`` in front for the journal."""

    def __init__(self, journal: bool | None = None) -> None:
        super().__init__(FORMAT)
        self.journal = stderr_is_journal() if journal is None else journal

    def format(self, record: logging.LogRecord) -> str:
        line = " | ".join(part for part in super().format(record).splitlines() if part)
        if not self.journal:
            return line
        level = max((lvl for lvl in _PRIORITY if lvl <= record.levelno), default=logging.DEBUG)
        return f"<{_PRIORITY[level]}>{line}"


def log_to_stderr(level: int = logging.INFO) -> None:
    """The station side's logging (the relay has its own, with filters): INFO and up to
    stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("alembic").setLevel(logging.WARNING)
