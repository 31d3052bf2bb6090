"""The parser processes of a long first index: order kept, and a dead one loses nothing."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from mailbridge.station.poller import parse
from mailbridge.station.poller.parse import Chunk, parse_all
from mailbridge.station.poller.worker import Parser
from tests.station.poller_helpers import RELAY_ID, new_ref, plain, tip

POISON = (b"From: a@example.org\r\nSubject: poison\r\nMessage-ID: <p@example.org>\r\n"
          b"Content-Type: text/plain; charset=bogus\r\n\r\n" + "Có hàng lậu".encode() + b"\r\n")


def chunks() -> list[Chunk]:
    raws = [tip(new_ref()), plain("other"), POISON, tip(new_ref(), "thêm"), plain("x"),
            tip(new_ref())]
    return [[(uid, ("\\Seen",), uid, raws[uid - 1], None, False)
             for uid in (k, k + 1)] for k in range(1, len(raws), 2)]


def test_chunks_spread_over_workers_come_back_as_parsed_here() -> None:
    work = chunks()
    with Parser(RELAY_ID, 2) as parser:
        assert parser.depth == 2
        pending = [parser.submit(c) for c in work]  # all in flight before any is read
        got = [result() for result in pending]
    assert got == [parse_all(c, RELAY_ID) for c in work]
    assert got[1][0].indexed is not None and got[1][0].indexed.problems  # poison is flagged
    assert got[1][0].raw == POISON  # and keeps its bytes for the quarantine


def test_a_dead_worker_hands_its_chunks_back(caplog: pytest.LogCaptureFixture) -> None:
    work = chunks()
    with Parser(RELAY_ID, 2) as parser:
        proc = parser.workers[0].proc
        assert proc is not None
        proc.kill()
        proc.wait()
        with caplog.at_level(logging.WARNING):
            got = [parser.submit(c)() for c in work]
        assert parser.workers[0].proc is None and parser.workers[1].proc is not None
    assert got == [parse_all(c, RELAY_ID) for c in work]
    assert "parser process stopped" in caplog.text


def test_no_workers_parses_in_process() -> None:
    work = chunks()
    with Parser(RELAY_ID, 0) as parser:
        assert parser.depth == 1
        assert [parser.submit(c)() for c in work] == [parse_all(c, RELAY_ID) for c in work]


def test_a_parser_process_imports_only_what_parsing_needs() -> None:
    """Each parser process is resident memory against ledger.memory_mb: the email
    package and the contract check, no database, config, logging or threads."""
    listed = subprocess.run(
        [sys.executable, "-c", f"import sys, {parse.__name__}; print(*sorted(sys.modules))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert "email.message" in listed and "mailbridge.core.message" in listed
    assert not {m for m in listed if m.split(".")[0] in {
        "sqlalchemy", "sqlite3", "alembic", "imapclient", "ssl", "babel", "rich", "logging",
        "subprocess", "threading", "concurrent"}}
    assert {m for m in listed if m.startswith("mailbridge.")} <= {
        "mailbridge.core", "mailbridge.core.message", "mailbridge.core.receipts",
        "mailbridge.core.text", "mailbridge.errors", "mailbridge.station",
        "mailbridge.station.records", "mailbridge.station.searchtext",
        "mailbridge.station.poller", "mailbridge.station.poller.index", parse.__name__}
