"""Weak signal: the draft script in a real Chromium, the network cut by CDP emulation."""

from __future__ import annotations

import email
import email.policy
import gzip
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from mailbridge.relay import web
from tests.e2e.conftest import RunningRelay
from tests.e2e.support import maildir_files
from tests.waiting import wait_for

pytestmark = pytest.mark.browser

FORM = "/s/ncs/cho"
KEY = "mb:/s/ncs/cho"
TEXT = "Xe tải chở hàng qua đường mòn lúc nửa đêm, mark-DR4FT"


def accepted_tips(relay: RunningRelay) -> int:
    with closing(sqlite3.connect(relay.folder / "relay.db")) as db:
        count: int = db.execute("SELECT count(*) FROM relay_tips").fetchone()[0]
    return count


def draft(page: Any) -> object:
    return page.evaluate(f"localStorage.getItem({KEY!r})")


def test_offline_send_is_kept_and_sent_once_when_the_signal_is_back(
        browser: Any, running_relay: RunningRelay, artifacts: Path) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 640})
    try:
        page = context.new_page()
        page.goto(running_relay.base + "/S/NCS/CHO")
        before = accepted_tips(running_relay)
        page.click("label[for=c-smuggling]")
        page.fill("#text", TEXT)
        assert '"category":"smuggling"' in str(draft(page)) and TEXT in str(draft(page))

        context.set_offline(True)
        page.click("button[type=submit]")
        page.wait_for_selector("#offline", state="visible")
        assert page.is_hidden("#again")  # offered only once the network is back
        (artifacts / "languages" / "vi").mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(artifacts / "languages" / "vi" / "form-offline.png"),
                        full_page=True)
        assert accepted_tips(running_relay) == before and TEXT in str(draft(page))

        context.set_offline(False)
        page.wait_for_selector("#again", state="visible")
        page.click("#again")
        page.wait_for_selector(".code")
        assert draft(page) is None
        assert accepted_tips(running_relay) == before + 1
        mail = running_relay.folder / "mail" / "ncs"
        wait_for(lambda: any(TEXT.encode() in _body(p) for p in maildir_files(mail)),
                 "the tip delivered")
        assert sum(TEXT.encode() in _body(p) for p in maildir_files(mail)) == 1

        page.goto(running_relay.base + FORM)  # the next tip starts empty
        assert page.input_value("#text") == "" and not page.is_checked("#c-smuggling")
    finally:
        context.close()


def test_draft_survives_a_reload_and_the_erase_button_removes_it(
        browser: Any, running_relay: RunningRelay) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 640})
    try:
        page = context.new_page()
        page.goto(running_relay.base + FORM)
        page.click("label[for=c-drugs]")
        page.fill("#text", "Bản nháp")
        page.fill("#where", "Cầu treo")
        page.reload()
        assert page.input_value("#text") == "Bản nháp" and page.is_checked("#c-drugs")
        assert page.input_value("#where") == "Cầu treo"
        page.click("#erase")
        assert draft(page) is None and page.input_value("#text") == ""
        assert not page.is_checked("#c-drugs")
        page.reload()
        assert page.input_value("#text") == "" and page.input_value("#where") == ""
    finally:
        context.close()


def test_without_javascript_the_draft_controls_never_show(
        browser: Any, running_relay: RunningRelay) -> None:
    context = browser.new_context(java_script_enabled=False,
                                  viewport={"width": 360, "height": 640})
    try:
        page = context.new_page()
        page.goto(running_relay.base + FORM)
        for hidden in ("#offline", "#again", "#kept", "#erase"):
            assert page.is_hidden(hidden)
        assert page.locator("button:visible").count() == 1
    finally:
        context.close()


def _body(path: Path) -> bytes:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    body = message.get_body(("plain",))
    return b"" if body is None else str(body.get_content()).encode()


def test_the_draft_script_is_at_most_1_kb_gzip() -> None:
    script = web.SCRIPTS["draft"].encode()
    assert len(gzip.compress(script, compresslevel=9)) <= 1024
