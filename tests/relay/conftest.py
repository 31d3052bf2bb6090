"""The relay database of a test, on SQLite and on a real PostgreSQL server, with a clock
that moves only when told to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbridge.relay.store import RelayStore
from tests.relay.outbox_driver import FakeClock


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'relay.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(url: str, clock: FakeClock) -> Iterator[RelayStore]:
    s = RelayStore(url, clock=clock)
    s.upgrade()
    yield s
    s.close()
