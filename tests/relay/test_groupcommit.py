"""Group commit on a real SQLite file: queued writes share a transaction, a failed one is
rolled back alone, a failed commit fails them all, and nobody returns before it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import IntegrityError

from mailbridge.relay.groupcommit import GroupCommit
from mailbridge.relay.store import RelayStore
from tests.waiting import wait_for


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """The relay store's SQLite engine (WAL, FULL sync, BEGIN IMMEDIATE for writers)
    with a table of its own."""
    store = RelayStore(f"sqlite:///{tmp_path / 'relay.db'}")
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE rows (n INTEGER PRIMARY KEY)"))
    yield store.engine
    store.close()


def writer(engine: Engine) -> Callable[[], AbstractContextManager[Connection]]:
    return engine.execution_options(mailbridge_write=True).begin


def commits(engine: Engine) -> list[int]:
    seen: list[int] = []
    event.listen(engine, "commit", lambda conn: seen.append(1))
    return seen


def stored(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [n for (n,) in conn.execute(text("SELECT n FROM rows ORDER BY n"))]


def insert(n: int) -> Callable[[Connection], int]:
    def write(conn: Connection) -> int:
        conn.execute(text("INSERT INTO rows (n) VALUES (:n)"), {"n": n})
        return n * 10
    return write


def queued_behind_a_held_batch(group: GroupCommit, gate: threading.Event,
                               writes: list[Callable[[Connection], Any]],
                               after: Callable[[], object] = lambda: None,
                               ) -> dict[int, Any]:
    """Run ``writes[0]`` in a first batch held open until every other write has queued
    behind it, then let them all go; what each caller got (a value or its exception),
    and ``after()`` evaluated in each caller right after ``run`` returned."""
    outcomes: dict[int, Any] = {}

    def call(i: int) -> None:
        try:
            outcomes[i] = (group.run(writes[i]), after())
        except Exception as exc:
            outcomes[i] = (exc, after())

    first = threading.Thread(target=call, args=(0,))
    first.start()
    rest = [threading.Thread(target=call, args=(i,)) for i in range(1, len(writes))]
    for thread in rest:
        thread.start()
    wait_for(lambda: group.queued == len(rest), "the writes to queue", interval=0.01)
    assert group.queued == len(rest)
    gate.set()
    for thread in [first, *rest]:
        thread.join(timeout=20)
    return outcomes


def gated(engine: Engine, gate: threading.Event,
          fail_commit: bool = False) -> Callable[[], AbstractContextManager[Connection]]:
    """A writer whose first transaction waits for *gate*; with *fail_commit* every
    transaction fails at its end, after its writes ran."""
    @contextmanager
    def begin() -> Iterator[Connection]:
        gate.wait(timeout=20)
        with writer(engine)() as conn:
            yield conn
            if fail_commit:
                raise OSError("disk I/O error")
    return begin


def test_writes_queued_meanwhile_share_one_commit(engine: Engine) -> None:
    gate = threading.Event()
    group = GroupCommit(gated(engine, gate))
    counted = commits(engine)
    outcomes = queued_behind_a_held_batch(group, gate, [insert(n) for n in range(6)],
                                          after=lambda: stored(engine))
    assert {i: value for i, (value, _) in outcomes.items()} == {n: n * 10 for n in range(6)}
    assert len(counted) == 2  # the first write alone, then the five queued behind it
    assert stored(engine) == list(range(6))
    for i, (_, visible) in outcomes.items():  # committed before its caller went on
        assert i in visible


def test_a_write_that_raises_is_rolled_back_alone(engine: Engine) -> None:
    def half_then_fail(conn: Connection) -> int:
        conn.execute(text("INSERT INTO rows (n) VALUES (99)"))
        raise ValueError("station full")

    gate = threading.Event()
    group = GroupCommit(gated(engine, gate))
    outcomes = queued_behind_a_held_batch(
        group, gate, [insert(0), insert(1), half_then_fail, insert(1), insert(3)])
    assert isinstance(outcomes[2][0], ValueError)
    assert isinstance(outcomes[3][0], IntegrityError)  # the database refused it
    assert [outcomes[i][0] for i in (0, 1, 4)] == [0, 10, 30]
    assert stored(engine) == [0, 1, 3]


def test_a_failed_commit_fails_every_write_of_its_batch(engine: Engine) -> None:
    gate = threading.Event()
    group = GroupCommit(gated(engine, gate, fail_commit=True))
    outcomes = queued_behind_a_held_batch(group, gate, [insert(n) for n in range(4)])
    assert all(isinstance(value, OSError) for value, _ in outcomes.values())
    assert len(outcomes) == 4
    assert stored(engine) == []
    group = GroupCommit(writer(engine))  # the next batch is not held up by it
    assert group.run(insert(7)) == 70
    assert stored(engine) == [7]


def test_one_write_alone_is_committed_at_once(engine: Engine) -> None:
    group = GroupCommit(writer(engine))
    counted = commits(engine)
    assert [group.run(insert(n)) for n in range(3)] == [0, 10, 20]
    assert len(counted) == 3
    def missing(conn: Connection) -> int:
        raise KeyError("x")

    with pytest.raises(KeyError):
        group.run(missing)
    assert stored(engine) == [0, 1, 2]
