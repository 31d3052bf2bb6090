"""Log lines for the journal: one line per event, the level's priority in front when
stderr is the journal, and only then."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from mailbridge.logs import JournalFormatter, stderr_is_journal


def record(level: int, message: str, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("mailbridge.relay.outbox", level, __file__, 1, message, (), info)


def test_a_traceback_is_one_line_and_the_priority_leads() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        line = JournalFormatter(journal=True).format(record(logging.ERROR, "a\nb", exc))
    assert "\n" not in line
    assert line.startswith("<3>ERROR mailbridge.relay.outbox: a | b | Traceback")
    assert JournalFormatter(journal=True).format(record(logging.WARNING, "w")) == (
        "<4>WARNING mailbridge.relay.outbox: w")
    assert JournalFormatter(journal=True).format(record(logging.INFO, "i")).startswith("<6>")
    assert JournalFormatter(journal=False).format(record(logging.INFO, "i")) == (
        "INFO mailbridge.relay.outbox: i")


def test_the_journal_is_recognised_by_its_device_and_inode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with (tmp_path / "err").open("w") as err:
        monkeypatch.setattr(sys, "stderr", err)
        info = os.fstat(err.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        assert stderr_is_journal()
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino + 1}")
        assert not stderr_is_journal()  # a child whose stderr was redirected elsewhere
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not stderr_is_journal()
