"""Audio prompts in Chromium: nothing of a recording is fetched until it is played."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mailbridge.config import load_config
from mailbridge.demo import make_prompts
from tests.e2e.conftest import SECRET
from tests.e2e.support import MAILDIR_STATION, relay_in_thread, relay_toml

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def spoken_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("audio")
    make_prompts(folder / "prompts")
    station = MAILDIR_STATION.replace('maildir = "mail/ncs"',
                                      'maildir = "mail/ncs"\naudio_prompts = "prompts"')
    (folder / "mailbridge.toml").write_text(relay_toml(station, secret_env="MB_SECRET"),
                                            encoding="utf-8")
    with relay_in_thread(load_config(folder / "mailbridge.toml",
                                     env={"MB_SECRET": SECRET})) as base:
        yield base


@pytest.mark.parametrize("javascript", [False, True])
def test_no_audio_byte_until_the_prompt_is_played(browser: Any, spoken_relay: str,
                                                  javascript: bool) -> None:
    context = browser.new_context(java_script_enabled=javascript,
                                  viewport={"width": 360, "height": 640})
    try:
        page = context.new_page()
        audio: list[str] = []
        page.on("request", lambda request: audio.append(request.url)
                if "/audio/" in request.url else None)
        page.goto(spoken_relay + "/S/NCS/CHO", wait_until="networkidle")
        player = page.locator("audio")
        assert player.count() == 1 and player.get_attribute("preload") == "none"
        assert player.bounding_box() is not None  # shown, with its controls
        assert audio == []
        if javascript:  # the tap on play (headless Chromium has no speaker to click)
            with page.expect_request(lambda request: "/audio/" in request.url) as played:
                page.evaluate("document.querySelector('audio').play().catch(() => {})")
            assert played.value.url.startswith(spoken_relay + "/audio/ncs/")
    finally:
        context.close()
