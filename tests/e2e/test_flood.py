"""A bounded flood on loopback against the real `mailbridge serve`: one station's mailbox
receives at most relay.station_tips_per_hour, every tip acknowledged is delivered, and a
tipster writing to another station is served while the flood goes on."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.e2e.support import (
    MAILDIR_STATION,
    Answer,
    RelayProcess,
    free_port,
    maildir_files,
    send_tip,
    submit,
    write_config,
)
from tests.relay.outbox_driver import refs_in_maildir
from tests.waiting import wait_for

LIMIT, FLOOD, CLIENTS = 10, 48, 8
OTHER_STATION = MAILDIR_STATION.replace('id = "ncs"', 'id = "abc"').replace(
    "mail/ncs", "mail/abc").replace("Nậm Cha", "A Bung").replace("tips@ncs", "tips@abc")


def test_a_flood_fills_one_hour_of_one_station_and_nothing_more(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port, MAILDIR_STATION + OTHER_STATION,
                          extra=f"station_tips_per_hour = {LIMIT}\n")
    relay = RelayProcess(config, port).start()
    hours = {int(time.time() // 3600)}
    try:
        def other_tipster() -> str:
            with httpx.Client(timeout=60) as client:
                return submit(client, relay.base, "/s/abc/cho", "Có người lạ ở bản.").ref

        with ThreadPoolExecutor(CLIENTS) as pool:  # the other tipster amid the flood
            def flood(n: int) -> Answer:
                return send_tip(relay.base, "/s/ncs/cho", f"Tin số {n}: hàng lậu.")

            first = [pool.submit(flood, n) for n in range(FLOOD // 2)]
            other = pool.submit(other_tipster)
            rest = [pool.submit(flood, n) for n in range(FLOOD // 2, FLOOD)]
            results = [f.result() for f in first + rest]
            other_ref = other.result()
        hours.add(int(time.time() // 3600))
        acknowledged = sorted(a.ref for a in results if a.status == 200)
        refused = [(a.status, a.retry_after) for a in results if a.status != 200]
        assert 0 < len(acknowledged) <= LIMIT * len(hours)
        assert len(acknowledged) + len(refused) == FLOOD
        assert all(status == 503 and 0 < int(retry) <= 3600 for status, retry in refused)
        mail = tmp_path / "mail"
        wait_for(lambda: len(maildir_files(mail / "ncs")) == len(acknowledged),
                 "every acknowledged tip delivered", timeout=60)
        assert sorted(refs_in_maildir(mail / "ncs")) == acknowledged
        wait_for(lambda: refs_in_maildir(mail / "abc") == [other_ref], "the other tip")
    finally:
        relay.stop()
