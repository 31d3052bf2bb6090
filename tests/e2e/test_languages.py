"""Every language in Chromium: switched on the page, a tip sent in each, every page shot.

JavaScript is off (as on many cheap phones): the switch is plain links, the choice
travels in the URL and the form. Screenshots at 360x640 go to
test-artifacts/languages/LANG/PAGE.png.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po

from mailbridge.config import load_config
from mailbridge.demo import make_prompts
from mailbridge.labels import catalog_path
from mailbridge.relay.i18n import gettext_for, html_lang, language_name
from tests.e2e.conftest import SECRET
from tests.e2e.support import HOTLINE_STATION, relay_in_thread, relay_toml

pytestmark = pytest.mark.browser

LANGUAGES = ("vi", "hmn", "en", "hmn-chv")
STATION, PLACE, HOTLINE = "Đồn Biên phòng Nậm Cha", "Chợ phiên", "0213 3888 999"
VIEW = {"width": 360, "height": 640}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("languages")
    toml = relay_toml(HOTLINE_STATION, secret_env="MB_SECRET", rate=1000,
                      extra=f"languages = {list(LANGUAGES)!r}\n".replace("'", '"'))
    (folder / "mailbridge.toml").write_text(toml, encoding="utf-8")
    with relay_in_thread(load_config(folder / "mailbridge.toml",
                                     env={"MB_SECRET": SECRET})) as base:
        yield base


def shots(artifacts: Path, lang: str) -> Path:
    folder = artifacts / "languages" / lang
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize("lang", LANGUAGES)
def test_switch_language_send_a_tip_and_read_it_back_without_javascript(
        browser: Any, relay: str, artifacts: Path, lang: str) -> None:
    _ = gettext_for(lang)
    out = shots(artifacts, lang)
    context = browser.new_context(java_script_enabled=False, viewport=VIEW)
    try:
        page = context.new_page()
        page.goto(f"{relay}/?lang={lang}")
        page.screenshot(path=str(out / "chooser.png"), full_page=True)
        page.goto(f"{relay}/S/NCS/CHO")  # the poster's URL: Vietnamese by default
        if lang != "vi":
            with page.expect_navigation():
                page.click(f"nav a[href='?lang={lang}']")
        assert page.get_attribute("html", "lang") == html_lang(lang)
        assert page.inner_text("nav b") == language_name(lang)
        assert page.inner_text("h1") == _("Send a tip")
        page.screenshot(path=str(out / "form.png"), full_page=True)

        page.click("label[for=c-border]")
        page.fill("#text", f"Hai người lạ qua mốc giới lúc sáng sớm ({lang})")
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.inner_text("h1") == _("Thank you. Your tip was received.")
        code = page.inner_text(".code").replace(" ", "")
        ref = re.search(r"NCS-\d{4}", page.content())
        assert ref is not None
        page.screenshot(path=str(out / "receipt.png"), full_page=True)

        with page.expect_navigation():
            page.click(f"a[href='/status?lang={lang}']")
        assert page.get_attribute("html", "lang") == html_lang(lang)
        page.screenshot(path=str(out / "status.png"), full_page=True)
        page.fill("#code", "1234 5678")
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.inner_text(".err") == _("Check the code: it has 16 digits, and one of "
                                            "them is not right.")
        page.screenshot(path=str(out / "status-error.png"), full_page=True)
        page.fill("#code", code)
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.inner_text("h1") == _("Your tip %(ref)s") % {"ref": ref.group(0)}
        page.screenshot(path=str(out / "conversation.png"), full_page=True)

        page.goto(f"{relay}/s/nope?lang={lang}")
        assert page.inner_text("h1") == _("Page not found")
        page.screenshot(path=str(out / "not-found.png"), full_page=True)
    finally:
        context.close()


def visible_text(page: Any) -> list[str]:
    """Every rendered text node's text (what a reader sees), in document order."""
    found: list[str] = page.evaluate("""() => {
        const out = [], walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        while (walk.nextNode()) {
            const node = walk.currentNode, box = node.parentElement;
            if (node.textContent.trim() && box.getClientRects().length
                && getComputedStyle(box).visibility !== 'hidden') out.push(node.textContent);
        }
        for (const field of document.querySelectorAll(
                'input:not([type=hidden]):not([type=radio]):not([type=file]),textarea'))
            if (field.value) out.push(field.value);
        return out; }""")
    return found


@pytest.mark.parametrize("javascript", [False, True])
def test_the_hmong_form_speaks_only_its_catalog(browser: Any, relay: str,
                                                javascript: bool) -> None:
    """Each visible word is an hmn msgstr or data (station, poster, phone, the switch's
    names of the other languages): never a Vietnamese fallback or an English msgid."""
    with catalog_path("hmn", ".po").open("rb") as po:
        strings = [m.string for m in read_po(po) if m.id and isinstance(m.string, str)]
    data = [STATION, PLACE, HOTLINE, *(language_name(lang) for lang in LANGUAGES)]
    context = browser.new_context(java_script_enabled=javascript, viewport=VIEW)
    try:
        page = context.new_page()
        page.goto(f"{relay}/s/ncs/cho?lang=hmn")
        texts = visible_text(page)
    finally:
        context.close()
    assert len(texts) > 15
    rest = " ".join(texts)
    for value in sorted(data, key=len, reverse=True):
        rest = rest.replace(value, " ")
    for string in sorted(strings, key=len, reverse=True):
        # A placeholder holds data removed above, or a number (at most 3 photos).
        pattern = r"\s*(?:[\d.,]+)?\s*".join(re.escape(part)
                                              for part in re.split(r"%\(\w+\)s", string))
        rest = re.sub(pattern, " ", rest)
    assert re.fullmatch(r"[\s·:]*", rest), rest


@pytest.mark.parametrize("javascript", [False, True])
def test_a_voice_tip_with_a_category_and_nothing_typed_takes_at_most_four_taps(
        browser: Any, relay: str, tmp_path: Path, javascript: bool) -> None:
    """From the scanned URL to the receipt: a tap on the category, one to record
    (set_input_files stands for the phone's recorder), one on send."""
    make_prompts(tmp_path)  # a real spoken recording, as a phone's recorder makes one
    taps = 0
    context = browser.new_context(java_script_enabled=javascript, viewport=VIEW)
    try:
        page = context.new_page()
        page.goto(f"{relay}/S/NCS/CHO")  # the scan: the camera opens the URL
        page.click("label[for=c-drugs]")
        taps += 1
        page.set_input_files("#voice", str(tmp_path / "vi.m4a"))
        taps += 1
        page.click("button[type=submit]")  # JavaScript on: sent by the draft script
        taps += 1
        page.wait_for_selector(".code")
    finally:
        context.close()
    print(f"taps from the scanned URL to a sent voice tip (JavaScript {javascript}): {taps}")
    assert taps <= 4
