"""The form in a real Chromium with JavaScript off, at a cheap phone's 360x640."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mailbridge.core.receipts import parse_receipt
from tests.e2e.conftest import RunningRelay

pytestmark = pytest.mark.browser

WIDTH = 360


@pytest.mark.parametrize(("lang", "query", "says"), [
    ("vi", "", "Cảm ơn bạn"),
    ("hmn", "?lang=hmn", "Ua tsaug"),
    ("en", "?lang=en", "Thank you"),
])
def test_tip_through_the_form_without_javascript(
        browser: Any, running_relay: RunningRelay, artifacts: Path,
        lang: str, query: str, says: str) -> None:
    context = browser.new_context(java_script_enabled=False,
                                  viewport={"width": WIDTH, "height": 640}, locale="vi-VN")
    try:
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        form_url = f"{running_relay.base}/S/NCS/CHO{query}"
        response = page.goto(form_url)
        assert response is not None and response.status == 200
        page.screenshot(path=str(artifacts / f"form-{lang}.png"), full_page=True)
        for tile in page.locator(".g label").all():
            box = tile.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH
            assert box["height"] >= 44  # a finger-sized target
        button = page.locator("button[type=submit]").bounding_box()
        assert button is not None and button["x"] + button["width"] <= WIDTH

        page.click("label[for=c-smuggling]")
        assert page.is_checked("#c-smuggling")
        page.fill("#text", "Có người mang nhiều bao hàng qua suối lúc chiều tối.")
        page.fill("#where", "Bến sông cuối bản")
        page.screenshot(path=str(artifacts / f"form-filled-{lang}.png"), full_page=True)
        with page.expect_navigation():
            page.click("button[type=submit]")
        code = page.locator(".code").inner_text()
        assert re.fullmatch(r"\d{4} \d{4} \d{4} \d{4}", code)
        assert parse_receipt(code) is not None
        assert says in page.content()
        assert code.replace(" ", "") not in page.url and page.url.startswith(
            f"{running_relay.base}/s/ncs/cho")
        page.screenshot(path=str(artifacts / f"receipt-{lang}.png"), full_page=True)
        assert not [m for m in console if "Content Security Policy" in m]
    finally:
        context.close()


def test_required_choice_is_enforced_by_the_browser(
        browser: Any, running_relay: RunningRelay) -> None:
    context = browser.new_context(java_script_enabled=False,
                                  viewport={"width": WIDTH, "height": 640}, locale="vi-VN")
    try:
        page = context.new_page()
        page.goto(f"{running_relay.base}/s/ncs")
        posts: list[str] = []
        page.on("request", lambda request: posts.append(request.url)
                if request.method == "POST" else None)
        page.fill("#text", "Không chọn loại")
        assert page.locator("form:invalid").count() == 1  # no category chosen yet
        page.click("button[type=submit]")  # held back by the browser: nothing is posted
        page.click("label[for=c-other]")
        with page.expect_navigation():
            page.click("button[type=submit]")
        # Requests are reported in order: had the first click posted, its POST came first.
        assert len(posts) == 1 and page.locator(".code").count() == 1
    finally:
        context.close()
