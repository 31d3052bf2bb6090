"""``mailbridge ledger``: the officers' terminal UI on the ledger.

Textual is imported only when the UI runs, so ``mailbridge report`` (which
shares the words in ``strings``) starts fast.
"""

from __future__ import annotations

import gc

from ...config import Settings


def run_ledger(settings: Settings, *, officer: str | None = None,
               station: str | None = None) -> int:
    """Open the UI for the stations the OS account (or *officer*) may see; exit code."""
    # No cyclic collection while the imports and the first page make their objects
    # (a tenth of the start-up, measured); the app turns it back on once the list is
    # up (``LedgerApp._mount_filters``), and at the latest when it ends.
    gc.disable()
    try:
        from .app import main

        code: int = main(settings, officer=officer, station=station)
    finally:
        gc.enable()
    return code
