"""Load shedding through the real `mailbridge serve`: past relay.tips_in_flight a tipster
is told at once that the relay is busy and the tip was NOT sent (503, Retry-After, the
text kept in the form), while the tips being handled go on and are delivered; with
two web workers the bound holds for both together.

The tips in flight are held by a real SQLite write lock on the relay database (their
form token cannot be consumed until it is released), so which answers can arrive before
the release does not depend on timing.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mailbridge.demo import fill_form
from tests.e2e.support import (
    _CODE,
    _REF,
    MAILDIR_STATION,
    RelayProcess,
    free_port,
    maildir_files,
    write_config,
)
from tests.relay.outbox_driver import refs_in_maildir
from tests.waiting import wait_for

IN_FLIGHT, TIPSTERS = 2, 5
BUSY = "Lúc này có quá nhiều người đang gửi tin báo. Tin báo CHƯA được gửi."


def _post(client: httpx.Client, target: str, fields: dict[str, str]) -> httpx.Response:
    return client.post(target, data=fields)


@pytest.mark.parametrize("workers", [1, 2])
def test_past_the_bound_the_next_tipster_is_told_at_once(tmp_path: Path, workers: int) -> None:
    """With two web workers the bound is the relay's, not each worker's."""
    port = free_port()
    config = write_config(tmp_path, port, MAILDIR_STATION, workers=workers,
                          extra=f"tips_in_flight = {IN_FLIGHT}\n")
    relay = RelayProcess(config, port).start()
    form_url = f"{relay.base}/s/ncs/cho"
    try:
        with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=20)) as client:
            forms = [fill_form(client.get(form_url).text, form_url, f"Xe lạ ở bản số {n}.")
                     for n in range(TIPSTERS)]
            lock = sqlite3.connect(tmp_path / "relay.db", isolation_level=None)
            try:
                lock.execute("BEGIN IMMEDIATE")  # the tips that get in wait for this
                with ThreadPoolExecutor(TIPSTERS) as pool:
                    replies: list[Future[httpx.Response]] = [
                        pool.submit(_post, client, target, fields)
                        for target, fields in forms]
                    wait_for(lambda: sum(f.done() for f in replies) == TIPSTERS - IN_FLIGHT,
                             "the tipsters past the bound answered", timeout=60)
                    busy = [f.result() for f in replies if f.done()]
                    for reply in busy:  # answered while the others still wait
                        assert reply.status_code == 503
                        assert reply.headers["retry-after"] == "10"
                        assert BUSY in reply.text
                        assert "Xe lạ ở bản số" in reply.text  # nothing typed is lost
                    # A form page is still served at once, without the database.
                    assert client.get(form_url).status_code == 200
                    lock.execute("ROLLBACK")
                    handled = [f.result() for f in replies if f.result() not in busy]
                    assert len(handled) == IN_FLIGHT
            finally:
                lock.close()
        assert [r.status_code for r in handled] == [200] * IN_FLIGHT
        refs = []
        for reply in handled:
            ref, code = _REF.search(reply.text), _CODE.search(reply.text)
            assert ref is not None and code is not None
            refs.append(ref.group(1))
        mail = tmp_path / "mail" / "ncs"
        wait_for(lambda: len(maildir_files(mail)) == IN_FLIGHT, "the handled tips delivered")
        assert sorted(refs_in_maildir(mail)) == sorted(refs)
    finally:
        relay.stop()
