"""ledger.memory_mb sizes the poller's parser processes and chunks (docs/PERFORMANCE.md)."""

from __future__ import annotations

from array import array

import pytest

from mailbridge.station.poller.budget import (
    PARSER_MIB,
    POLLER_MIB,
    Batches,
    batches_for,
    holds,
    parsers_for,
)


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


@pytest.mark.parametrize(("memory_mb", "messages", "mib"), [
    (96, 96, 0.75), (160, 160, 1.25), (250, 250, 1.953125), (1000, 250, 1.953125)])
def test_chunks_follow_the_memory_budget(memory_mb: int, messages: int, mib: float) -> None:
    assert batches_for(memory_mb) == Batches(messages=messages, bytes=int(mib * 2**20))


def cut(uids: range, larger: list[list[int]], alone: int = 2 * 2**20) -> list[list[int]]:
    return [list(c) for c in batches_for(160).chunks(array("I", uids), larger, alone)]


def test_small_mail_fills_a_chunk_by_count() -> None:
    assert [len(c) for c in cut(range(1, 401), [[], [], []])] == [160, 160, 80]


def test_bigger_mail_fills_it_by_its_size_class() -> None:
    above_8k = list(range(1, 101))
    above_32k = list(range(51, 101))
    chunks = cut(range(1, 101), [above_8k, above_32k, []])
    # 32 KiB each: 40 to 1.25 MiB; then 10 more at 32 and 3 at 256 KiB; then 5 at 256
    assert [len(c) for c in chunks] == [40, 13] + [5] * 9 + [2]
    assert [u for c in chunks for u in c] == list(range(1, 101))  # all, in order, once


def test_a_message_above_the_last_class_is_a_chunk_of_its_own() -> None:
    huge = [5]
    assert cut(range(1, 11), [huge, huge, huge]) == [[1, 2, 3, 4], [5], [6, 7, 8, 9, 10]]
    # one that may be no bigger than the chunk's bytes stays in it
    assert cut(range(1, 11), [huge, huge, huge], alone=2**20) == [list(range(1, 11))]


@pytest.mark.parametrize("value", [0, 1, 3, 4, 9, 10, 11])
def test_holds_is_membership_in_an_ascending_sequence(value: int) -> None:
    ascending = array("I", [1, 3, 4, 10])
    assert holds(ascending, value) == (value in {1, 3, 4, 10})
