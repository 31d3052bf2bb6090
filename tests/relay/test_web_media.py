"""The form with photos and a voice message: multipart, cleaned, refused in the tipster's
language with the text kept; the /status follow-up form takes files too."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest

from mailbridge.relay.connections import body_seconds
from mailbridge.relay.store import RelayStore
from mailbridge.relay.web import create_app
from tests import media_corpus as corpus
from tests.relay.test_web import (
    CODE,
    FORM,
    Relay,
    claimed_messages,
    fresh_fields,
    make_settings,
    running,
    token_of,
)

Files = list[tuple[str, tuple[str, bytes, str]]]


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    settings = make_settings(tmp_path_factory.mktemp("web-media"), max_photos=2)
    store = RelayStore(settings.relay.database)
    store.upgrade()
    with running(create_app(settings, store)) as base:
        yield Relay(base, store, settings, [])
    store.close()


def post(relay: Relay, files: Files, **fields: str) -> httpx.Response:
    with relay.client() as client:
        return client.post(FORM, data=fresh_fields(client, **fields), files=files)


def photo(data: bytes, name: str = "IMG_20261123_094713.jpg") -> tuple[str, tuple[str, bytes, str]]:
    return "photo", (name, data, "image/jpeg")


def test_the_form_asks_for_photos_and_a_recording_without_javascript(relay: Relay) -> None:
    with relay.client() as client:
        page = client.get(FORM).text
    assert 'enctype=multipart/form-data' in page
    assert "<input type=file id=photo name=photo accept=\"image/*\" multiple data-max=2048>" in page
    assert '<input type=file id=voice name=voice accept="audio/*" capture>' in page
    assert "<textarea" in page and "required>" not in page.split("<textarea")[1][:120]


def test_photos_and_a_voice_alone_make_a_tip_each_file_cleaned_and_listed(
        relay: Relay) -> None:
    claimed_messages(relay.store)  # what earlier tests left
    files: Files = [photo(corpus.jpeg_with_markers()), photo(corpus.heic_with_exif(), "x.heic"),
                    ("voice", ("MARKER.m4a", corpus.VOICES["m4a"](), "audio/mp4"))]
    reply = post(relay, files, text="")
    assert reply.status_code == 200, reply.text
    assert CODE.search(reply.text)
    (msg,) = claimed_messages(relay.store)
    parts = list(msg.iter_attachments())
    assert [p.get_filename() for p in parts] == ["anh-1.jpg", "anh-2.jpg", "ghi-am-1.m4a"]
    plain = msg.get_body(("plain",))
    assert plain is not None
    for part in parts:
        data = part.get_content()
        assert isinstance(data, bytes)
        assert hashlib.sha256(data).hexdigest() in plain.get_content()
    assert b"MARKER" not in msg.as_bytes() and b"IMG_2026" not in msg.as_bytes()


@pytest.mark.parametrize(("files", "says"), [
    ([photo(corpus.png_with_text()), photo(corpus.zip_as_jpeg())],
     "Nothing was sent: photo 2 is not a photo (JPEG, PNG, WebP or HEIC)."),
    ([photo(b"", "empty.jpg")], "Nothing was sent: photo 1 is empty."),
    ([photo(corpus.png_bomb())], "Nothing was sent: photo 1 could not be read and cleaned."),
    ([("voice", ("a.jpg", corpus.jpeg_with_markers(64, 64), "audio/mp4"))],
     "Nothing was sent: the voice message is not a sound recording."),
    ([photo(corpus.png_with_text())] * 3, "Nothing was sent: at most 2 photos."),
])
def test_a_file_that_cannot_be_cleaned_is_refused_and_the_text_kept(
        relay: Relay, files: Files, says: str) -> None:
    before = relay.rows()
    reply = post(relay, files, text="chữ của tôi vẫn còn", lang="en")
    assert reply.status_code == 400
    assert says in reply.text and "class=err" in reply.text
    assert ">chữ của tôi vẫn còn</textarea>" in reply.text
    assert relay.rows() == before


def test_refusals_speak_the_tipsters_language(relay: Relay) -> None:
    reply = post(relay, [photo(corpus.zip_as_jpeg())], text="")
    assert reply.status_code == 400
    assert "Chưa gửi được: ảnh 1 không phải là ảnh" in reply.text


def test_empty_file_fields_are_no_files_and_no_text_no_file_is_refused(relay: Relay) -> None:
    claimed_messages(relay.store)
    empty: Files = [("photo", ("", b"", "application/octet-stream")),
                    ("voice", ("", b"", "application/octet-stream"))]
    assert post(relay, empty, text="Chỉ có chữ").status_code == 200
    (msg,) = claimed_messages(relay.store)
    assert list(msg.iter_attachments()) == []
    assert post(relay, empty, text="").status_code == 400


def test_a_body_over_the_limit_is_refused_before_it_is_read(relay: Relay) -> None:
    huge = b"\xff\xd8\xff" + b"\0" * (3 * 15 * 1024 * 1024 + 20 * 1024 * 1024)
    assert post(relay, [photo(huge)], text="x").status_code == 413


def test_the_status_follow_up_takes_a_photo(relay: Relay) -> None:
    with relay.client() as client:
        receipt = client.post(FORM, data=fresh_fields(client, text="Tin đầu"))
        match = CODE.search(receipt.text)
        assert match is not None
        code = match.group(1).replace(" ", "")
        page = client.post("/status", data={"code": code, "lang": "vi"})
        assert 'enctype=multipart/form-data' in page.text and "name=photo" in page.text
        claimed_messages(relay.store)
        fields = {"code": code, "lang": "en", "t": token_of(page.text), "text": ""}
        refused = client.post("/status/add", data=fields,
                              files=[photo(corpus.truncated_jpeg())])
        assert refused.status_code == 400
        assert "photo 1 could not be read and cleaned" in refused.text
        fields["t"] = token_of(refused.text)
        added = client.post("/status/add", data=fields, files=[photo(corpus.webp_with_exif())])
    assert added.status_code == 200, added.text
    assert re.search(r"anh-1\.jpg", added.text)  # the tipster sees what was added
    (msg,) = claimed_messages(relay.store)
    assert msg["In-Reply-To"] and [p.get_filename() for p in msg.iter_attachments()] == [
        "anh-1.jpg"]


def test_a_photo_over_2g_gets_time_for_its_body_a_text_does_not() -> None:
    """A 4 MB photo at 32 kbit/s takes about 17 minutes; a text form keeps 60 s."""
    assert body_seconds(60, b"2000") == 60
    assert body_seconds(60, str(64 * 1024 + 4_000_000).encode()) == 60 + 1000
    assert body_seconds(60, b"999999999999") == 60 + 1800  # never more than half an hour
    assert body_seconds(60, b"-5") == body_seconds(60, b"") == 60


def test_uploads_beyond_the_memory_budget_are_refused_not_held(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """What all requests are receiving together is bounded: past it, "try again later"
    (503), and the budget is whole again once each body is read."""
    settings = make_settings(tmp_path_factory.mktemp("web-budget"))
    store = RelayStore(settings.relay.database)
    store.upgrade()
    app = create_app(settings, store)
    budget = app.state.web.upload_budget
    budget.limit = 200_000
    try:
        with running(app) as base, httpx.Client(base_url=base, timeout=30) as client:
            fields = fresh_fields(client, text="ảnh to")
            big = client.post(FORM, data=fields, files=[photo(corpus.jpeg_with_markers())])
            assert big.status_code == 503 and "Vui lòng thử lại sau vài phút" in big.text
            assert budget.held == 0
            small = client.post(FORM, data=fresh_fields(client, text="ảnh nhỏ"),
                                files=[photo(corpus.jpeg_with_markers(320, 240))])
            assert small.status_code == 200 and budget.held == 0
    finally:
        store.close()
