"""``mailbridge ledger``: the officers' terminal UI on the ledger.

Textual is imported only when the UI runs, so ``mailbridge report`` (which
shares the words in ``strings``) starts fast.
"""

from __future__ import annotations

from ...config import Settings


def run_ledger(settings: Settings, *, officer: str | None = None,
               station: str | None = None) -> int:
    """Open the UI for the stations the OS account (or *officer*) may see; exit code."""
    from .app import main

    code: int = main(settings, officer=officer, station=station)
    return code
