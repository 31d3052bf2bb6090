"""Group commit: the writes that queue meanwhile share one transaction and its sync.

SQLite with ``synchronous=FULL`` syncs its log at every commit, inside the one writer
lock that every web worker queues on. Under a surge that sync is what the queue waits
for. So the writes a process's threads hand to ``GroupCommit.run`` while another of its
batches is being committed wait for it to end; then the first of them runs them all,
each in its own savepoint, and commits them once.

- A write that raises is rolled back alone, and its caller gets the exception.
- If the transaction fails, none of its writes is stored, and every caller gets the
  error.
- Each caller returns only after the commit that holds its write, so a caller that
  acknowledges afterwards never acknowledges a write that a crash can lose.

For SQLite only: there one writer at a time is the rule anyway. Two PostgreSQL batches
could take the same rows in opposite orders and deadlock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

T = TypeVar("T")


class _Write(Generic[T]):
    """One caller's write, and its result once its batch is committed."""

    def __init__(self, fn: Callable[[Connection], T]) -> None:
        self.fn = fn
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]  # set when error is None


class GroupCommit:
    """Writes of many threads, committed in batches; ``begin`` opens a write
    transaction (the store's writer lock and ``BEGIN IMMEDIATE``)."""

    def __init__(self, begin: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._begin = begin
        self._turn = threading.Condition()
        self._queued: list[_Write[Any]] = []
        self._committing = False

    @property
    def queued(self) -> int:
        """How many writes wait for the batch being committed to end."""
        with self._turn:
            return len(self._queued)

    def run(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` inside a committed transaction: its value, or what it raised."""
        write = _Write(fn)
        with self._turn:
            self._queued.append(write)
            while self._committing and not write.done:
                self._turn.wait()
            if write.done:  # an earlier caller's batch held it
                return write.outcome()
            self._committing = True
            batch, self._queued = self._queued, []
        try:
            self._commit(batch)
        finally:
            with self._turn:
                for each in batch:
                    each.done = True
                self._committing = False
                self._turn.notify_all()
        return write.outcome()

    def _commit(self, batch: list[_Write[Any]]) -> None:
        try:
            with self._begin() as conn:
                # Savepoints straight on the driver's connection, under one name:
                # SQLAlchemy's begin_nested() compiled a new SAVEPOINT and RELEASE for
                # each numbered name, and dispatched its events: 0.15 ms a write.
                driver: Any = conn.connection.driver_connection
                for write in batch:
                    driver.execute("SAVEPOINT mailbridge_write")
                    try:
                        write.value = write.fn(conn)
                    except Exception as exc:
                        driver.execute("ROLLBACK TO mailbridge_write")
                        write.error = exc
                    driver.execute("RELEASE mailbridge_write")
        except BaseException as exc:  # nothing of the batch is stored
            for write in batch:
                write.error = exc
