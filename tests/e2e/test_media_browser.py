"""A photo from a real Chromium, with JavaScript off (the form as it is) and on (the photo
shrunk on a canvas before it leaves the phone); either way the relay cleans it."""

from __future__ import annotations

import email
import email.policy
import io
from email.message import EmailMessage
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mailbridge.relay.media import MB, MediaLimits
from tests import media_corpus as corpus
from tests.e2e.conftest import RunningRelay
from tests.e2e.support import maildir_files
from tests.waiting import wait_for

pytestmark = pytest.mark.browser

FORM = "/s/ncs/cho"


@cache
def phone_photo() -> bytes:
    """A 12-megapixel photo full of markers, as a phone camera writes it."""
    return corpus.jpeg_with_markers(4000, 3000)


def delivered(relay: RunningRelay, text: str) -> EmailMessage:
    mail = relay.folder / "mail" / "ncs"
    found: list[EmailMessage] = []

    def arrived() -> bool:
        for path in maildir_files(mail):
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            body = msg.get_body(("plain",)) if isinstance(msg, EmailMessage) else None
            if isinstance(msg, EmailMessage) and body and text in body.get_content():
                found.append(msg)
        return bool(found)

    wait_for(arrived, "the tip delivered")
    return found[0]


def send_photo(browser: Any, relay: RunningRelay, *, javascript: bool, text: str) -> int:
    """Send the phone photo through the form; the bytes of the file the form sent
    (the browser does not show a multipart body with files to Playwright)."""
    context = browser.new_context(viewport={"width": 360, "height": 640},
                                  java_script_enabled=javascript)
    try:
        page = context.new_page()
        page.goto(relay.base + FORM)
        page.click("label[for=c-smuggling]")
        page.fill("#text", text)
        page.set_input_files("#photo", files=[{"name": "IMG_20261123_094713.jpg",
                                               "mimeType": "image/jpeg",
                                               "buffer": phone_photo()}])
        page.wait_for_selector("button[type=submit]:enabled")
        size = len(phone_photo())
        if javascript:
            size = page.evaluate("[].reduce.call(document.getElementById('photo').files,"
                                 "function(n, f) { return n + f.size }, 0)")
            cdp = context.new_cdp_session(page)  # a slow uplink, to see the progress bar
            cdp.send("Network.enable")
            cdp.send("Network.emulateNetworkConditions", {
                "offline": False, "latency": 50, "downloadThroughput": 1_000_000,
                "uploadThroughput": 50_000})
        page.click("button[type=submit]")
        if javascript:
            page.wait_for_selector("#up", state="visible")
        page.wait_for_selector(".code", timeout=60_000)
    finally:
        context.close()
    return size


@pytest.mark.parametrize("javascript", [False, True], ids=["js-off", "js-on"])
def test_a_phone_photo_arrives_cleaned_with_javascript_off_and_on(
        browser: Any, running_relay: RunningRelay, javascript: bool) -> None:
    text = f"Ảnh chụp xe ở bìa rừng, javascript={javascript}"
    uploaded = send_photo(browser, running_relay, javascript=javascript, text=text)
    if javascript:  # shrunk on the phone: most of the bytes never leave it
        assert 0 < uploaded < len(phone_photo()) // 2
    msg = delivered(running_relay, text)
    (part,) = msg.iter_attachments()
    data = part.get_content()
    assert isinstance(data, bytes)
    assert part.get_filename() == "anh-1.jpg" and b"MARKER" not in msg.as_bytes()
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG" and max(image.size) <= 2048
        assert image.height > image.width  # upright: the EXIF orientation was applied
        assert not image.getexif()


def test_files_too_large_together_say_so_and_give_the_form_again(
        browser: Any, running_relay: RunningRelay, tmp_path: Path) -> None:
    """A phone video chosen as the recording makes the body larger than the relay
    takes (JavaScript off): refused unread, the page says it is the files and that the
    text did not arrive either, and gives the form again; nothing is delivered."""
    video = tmp_path / "VID_20261123_094713.mp4"
    video.write_bytes(b"\0\0\0\x18ftypmp42" + b"\0" * (MediaLimits().max_upload_bytes + MB))
    text = "Có người lạ mang hàng qua suối, tôi quay được đoạn phim"
    context = browser.new_context(java_script_enabled=False, viewport={"width": 360,
                                                                       "height": 640})
    try:
        page = context.new_page()
        page.goto(running_relay.base + FORM)
        page.click("label[for=c-smuggling]")
        page.fill("#text", text)
        page.set_input_files("#voice", str(video))
        page.click("button[type=submit]")
        page.wait_for_selector("h1")
        shown = page.inner_text(".err")
        assert shown.startswith("Chưa gửi được, kể cả phần chữ: ảnh và ghi âm cộng lại lớn "
                                "hơn 65 MB"), shown
        assert page.input_value("#text") == ""  # the form again, honestly empty
        page.click("label[for=c-smuggling]")
        page.fill("#text", text)
        page.click("button[type=submit]")  # without the video
        page.wait_for_selector(".code")
    finally:
        context.close()
    msg = delivered(running_relay, text)  # the second send, alone
    assert list(msg.iter_attachments()) == []
