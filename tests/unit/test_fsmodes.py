"""Private files and folders are 0600 / 0700 whatever the umask says."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbridge.fsmodes import open_private, private_dir, private_file


@pytest.fixture(params=[0o022, 0o000, 0o277])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_missing_folders_are_created_0700(tmp_path: Path, umask: int) -> None:
    tmp_path.chmod(0o755)
    private_dir(tmp_path / "a" / "b" / "c")
    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3
    assert mode(tmp_path) == 0o755  # an existing folder is the admin's: left alone


def test_files_are_created_0600_and_existing_ones_narrowed(tmp_path: Path, umask: int) -> None:
    created = private_file(tmp_path / "new" / "relay.db")
    assert mode(created) == 0o600 and mode(created.parent) == 0o700
    old = tmp_path / "old.db"
    old.write_bytes(b"x")
    old.chmod(0o644)
    fd = open_private(old, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"y")
    os.close(fd)
    assert mode(old) == 0o600 and old.read_bytes() == b"xy"
