"""What each web worker is given of a limit that must stay a total (relay/server.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mailbridge.config import load_config
from mailbridge.relay.server import per_worker
from tests.e2e.support import MAILDIR_STATION, SECRET, write_config


@pytest.mark.parametrize(("total", "workers", "share"), [
    (600, 1, 600), (600, 2, 300), (600, 4, 150), (601, 2, 301), (1, 4, 1)])
def test_each_worker_takes_its_share_of_the_total_lookups_rounded_up(
        tmp_path: Path, total: int, workers: int, share: int) -> None:
    config = write_config(tmp_path, 8080, MAILDIR_STATION,
                          extra=f"status_lookups_total_per_hour = {total}\n",
                          workers=workers)
    settings = load_config(config, env={"MAILBRIDGE_SECRET": SECRET})
    shared = per_worker(settings)
    assert shared.relay.status_lookups_total_per_hour == share
    # Everything else is the relay's own setting.
    assert dataclasses.replace(shared.relay, status_lookups_total_per_hour=total) == settings.relay
