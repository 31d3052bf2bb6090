"""Fixtures for every test: the real servers, and a umask as careless as an admin's."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.servers.fixtures", "tests.openpgp_keys"]


@pytest.fixture
def umask_022() -> Iterator[None]:
    """A umask that would leave new files world-readable: modes must not depend on it."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777
