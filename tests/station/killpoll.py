"""Run one IMAP poll and SIGKILL this process around the N-th batch commit.

``python -m tests.station.killpoll URL ATTACHMENTS ADDRESS PORT before|after N``:
a real ``kill -9`` at an exact point of the transaction, for the crash test.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from mailbridge.config import ImapSettings, Secret
from mailbridge.station.ledger.store import LedgerStore
from tests.station.poller_helpers import PASSWORD, Ledger


def main(url: str, attachments: str, address: str, port: str, mode: str, n: str) -> None:
    state = {"in_batch": False, "commits": 0}
    add_batch = LedgerStore.add_batch

    def counting_add_batch(self: LedgerStore, *args: Any, **kwargs: Any) -> Any:
        state["in_batch"] = True
        try:
            return add_batch(self, *args, **kwargs)
        finally:
            state["in_batch"] = False

    def before_commit(_session: Session) -> None:
        if state["in_batch"]:
            state["commits"] += 1
            if state["commits"] == int(n) and mode == "before":
                os.kill(os.getpid(), signal.SIGKILL)

    def after_commit(_session: Session) -> None:
        if state["in_batch"] and state["commits"] == int(n) and mode == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    LedgerStore.add_batch = counting_add_batch  # type: ignore[method-assign]
    event.listen(Session, "before_commit", before_commit)
    event.listen(Session, "after_commit", after_commit)
    imap = ImapSettings(host="127.0.0.1", port=int(port), tls="none", username=address,
                        password=Secret(PASSWORD), timeout=10)
    Ledger(url, Path(attachments), address).poll(imap)


if __name__ == "__main__":
    main(*sys.argv[1:])
