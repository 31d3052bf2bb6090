"""``mailbridge outbox list|retry ID|drop ID``: what an admin sees of the queue.

Only reference, station, state, attempts, times and the server's last reply
are shown: the tip text is never printed, even while it is still queued.
"""

from __future__ import annotations

from datetime import datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..config import Settings
from .store import OutboxRow, RelayStore

ACTIVE_STATES = ("queued", "sending", "dead")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


def outbox_table(rows: list[OutboxRow]) -> Table:
    table = Table("id", "station", "ref", "state", "attempts", "next attempt (UTC)",
                  "updated (hour)", "last error", title="outbox")
    for row in rows:
        table.add_row(str(row.id), row.station_id, row.ref, row.state, str(row.attempts),
                      _when(row.next_attempt_at), _when(row.updated_hour),
                      Text(row.last_error))  # Text: a server reply cannot inject markup
    return table


def run_outbox(settings: Settings, action: str, outbox_id: int | None, *,
               show_all: bool = False, console: Console | None = None) -> int:
    console = console or Console()
    store = RelayStore(settings.relay.database)
    try:
        store.upgrade()
        if action == "list":
            rows = store.list_outbox(None if show_all else ACTIVE_STATES)
            console.print(outbox_table(rows))
            console.print(f"{len(rows)} rows" + ("" if show_all else
                                                " (queued, sending, dead; --all for every row)"))
            return 0
        assert outbox_id is not None
        row = store.retry(outbox_id) if action == "retry" else store.drop(outbox_id)
        console.print(f"outbox {row.id} ({row.ref}, station {row.station_id}) is now "
                      f"{row.state}")
        return 0
    finally:
        store.close()
