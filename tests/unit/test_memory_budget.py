"""ledger.memory_mb sizes the poller's parser processes (figures: docs/PERFORMANCE.md)."""

from __future__ import annotations

import pytest

from mailbridge.station.poller.worker import PARSER_MIB, POLLER_MIB, parsers_for


@pytest.mark.parametrize(("memory_mb", "cores", "parsers"), [
    (160, 2, 2),     # the default: one parser process per core on two cores
    (160, 4, 2),     # and no more on four: the budget holds
    (125, 2, 1),
    (1000, 2, 2),    # room for more: one per core, as before the budget
    (1000, 8, 4),    # and at most MAX_WORKERS
    (96, 2, 0),      # the smallest budget: parsed in the poller's own process
    (POLLER_MIB + PARSER_MIB - 1, 4, 0),
    (POLLER_MIB + 2 * PARSER_MIB, 4, 2),
])
def test_parser_processes_follow_the_memory_budget(memory_mb: int, cores: int,
                                                   parsers: int) -> None:
    assert parsers_for(memory_mb, cores) == parsers
