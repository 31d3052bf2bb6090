"""The public form served for real (uvicorn on a free loopback port) over a real SQLite store."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import gzip
import hashlib
import logging
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette

from mailbridge.config import Placement, Settings, load_config
from mailbridge.core.receipts import ReceiptHasher, derive_key, parse_receipt
from mailbridge.relay import web
from mailbridge.relay.store import RelayStore
from mailbridge.relay.web import FORM_TYPE, SECURITY_HEADERS, create_app
from tests.e2e.support import HOTLINE_STATION, relay_toml
from tests.waiting import wait_for

SECRET = "web-test-secret-" + "s" * 32
CONFIG = relay_toml(HOTLINE_STATION + """
[[stations]]
id = "pvs"
name = "Đồn Biên phòng Pa Vây Sử"
mailbox = "tips@pvs.example.test"
maildir = "mail/pvs"
""", secret_env="MB_SECRET", rate=1000, extra="max_text_chars = 2000\n")
CODE = re.compile(r"class=code>(\d{4} \d{4} \d{4} \d{4})<")
REF = re.compile(r"\b(NCS-\d{4})\b")
TOKEN = re.compile(r'name=t value="([^"]+)"')
FORM = "/s/ncs/cho"


def make_settings(folder: Path, **relay: Any) -> Settings:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mailbridge.toml"
    path.write_text(CONFIG, encoding="utf-8")
    settings = load_config(path, env={"MB_SECRET": SECRET})
    return dataclasses.replace(settings, relay=dataclasses.replace(settings.relay, **relay))


@contextmanager
def running(app: Starlette) -> Iterator[str]:
    """uvicorn in a thread on a free 127.0.0.1 port; yields the base URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                           lifespan="off", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclasses.dataclass
class Relay:
    base: str
    store: RelayStore
    settings: Settings
    wakeups: list[int]

    def rows(self) -> int:
        return len(self.store.list_outbox())

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    settings = make_settings(tmp_path_factory.mktemp("web"))
    store = RelayStore(settings.relay.database)
    store.upgrade()
    wakeups: list[int] = []
    app = create_app(settings, store, on_accepted=lambda: wakeups.append(1))
    with running(app) as base:
        yield Relay(base, store, settings, wakeups)
    store.close()


def client_get(relay: Relay, path: str) -> httpx.Response:
    with relay.client() as client:
        return client.get(path)


def token_of(page: str) -> str:
    match = TOKEN.search(page)
    assert match is not None, page[:500]
    return match.group(1)


def fresh_fields(client: httpx.Client, path: str = FORM, **fields: str) -> dict[str, str]:
    token = token_of(client.get(path).text)
    return {"t": token, "lang": "vi", "category": "drugs", "text": "Có người lạ", **fields}


def claimed_messages(store: RelayStore) -> list[EmailMessage]:
    """Take every due row as the delivery worker would, to read what would be sent."""
    claims = store.claim_due(1000, timedelta(minutes=5))
    return [email.message_from_bytes(c.message, policy=email.policy.default)
            for c in claims]


# -- pages ----------------------------------------------------------------------------


@pytest.mark.parametrize(("lang", "title", "label", "html_lang"), [
    ("vi", "Gửi tin báo", "Ma túy", "vi"),
    ("hmn", "Tshaj qhia", "Tshuaj yeeb", "hmn-Latn"),
    ("en", "Send a tip", "Drugs", "en"),
])
def test_form_page_in_each_language(relay: Relay, lang: str, title: str, label: str,
                                    html_lang: str) -> None:
    with relay.client() as client:
        page = client.get(f"{FORM}?lang={lang}")
    assert page.status_code == 200
    assert f'<html lang="{html_lang}">' in page.text
    assert f"<h1>{title}</h1>" in page.text
    assert label in page.text
    assert page.text.count("type=radio name=category") == len(relay.settings.categories)
    assert page.text.count("<svg class=p") == len(relay.settings.categories)
    assert "Chợ phiên" in page.text and 'href="tel:02133888999"' in page.text
    assert "<script src" not in page.text and 'action="/s/ncs/cho"' in page.text
    assert f'name=lang value="{lang}"' in page.text


def test_default_language_is_vietnamese_and_unknown_lang_falls_back(relay: Relay) -> None:
    with relay.client() as client:
        plain, odd = client.get(FORM), client.get(FORM + "?lang=fr")
    for page in (plain, odd):
        assert page.status_code == 200
        assert '<html lang="vi">' in page.text and "Không cần ghi tên" in page.text
        assert '<a href="?lang=hmn" hreflang="hmn-Latn" lang="hmn-Latn">Hmoob</a>' in page.text
        assert '<a href="?lang=en" hreflang="en" lang="en">English</a>' in page.text


def test_chooser_lists_stations_and_healthz_says_only_ok(relay: Relay) -> None:
    with relay.client() as client:
        chooser = client.get("/?lang=en")
        health = client.get("/healthz")
    assert chooser.status_code == 200
    assert 'href="/s/ncs?lang=en"' in chooser.text and 'href="/s/pvs?lang=en"' in chooser.text
    assert health.status_code == 200 and health.text == "ok"
    icon = client_get(relay, "/favicon.ico")
    assert icon.status_code == 204 and icon.content == b""


def test_upper_case_qr_url_opens_the_form(relay: Relay) -> None:
    with relay.client() as client:
        page = client.get("/S/NCS/CHO")
        station_only = client.get("/s/NCS")
    assert page.status_code == 200 and 'action="/s/ncs/cho"' in page.text
    assert station_only.status_code == 200 and 'action="/s/ncs"' in station_only.text


@pytest.mark.parametrize("path", ["/s/nope", "/s/ncs/nope", "/s/NC%24", "/nothing/here",
                                  "/s/ncs/cho/extra"])
def test_unknown_pages_are_friendly_404(relay: Relay, path: str) -> None:
    with relay.client() as client:
        page = client.get(path)
    assert page.status_code == 404
    assert "Không tìm thấy trang" in page.text and "Traceback" not in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert '<a href="/">Chọn đồn biên phòng</a>' in page.text


def test_404_page_speaks_the_requested_language(relay: Relay) -> None:
    page = client_get(relay, "/s/nope?lang=en")
    assert page.status_code == 404 and "Page not found" in page.text
    assert '<a href="/?lang=en">Choose a station</a>' in page.text


def test_security_headers_on_every_response(relay: Relay) -> None:
    with relay.client() as client:
        responses = [client.get("/"), client.get(FORM), client.get("/s/nope"),
                     client.get("/healthz"), client.post(FORM, data=fresh_fields(client))]
    for response in responses:
        headers = response.headers
        assert headers["cache-control"] == "no-store"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-content-type-options"] == "nosniff"
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "http" not in csp
        assert "set-cookie" not in headers


def test_inline_style_is_the_one_the_csp_allows(relay: Relay) -> None:
    with relay.client() as client:
        page = client.get(FORM)
    style = re.search(r"<style>(.*?)</style>", page.text, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in page.headers["content-security-policy"]


def test_every_static_script_is_allowed_by_its_hash_and_nothing_else() -> None:
    files = sorted((Path(web.__file__).parent / "static").glob("*.js"))
    allowed = re.search(r"script-src ([^;]*)", web.CSP)
    hashes = {"'sha256-" + base64.b64encode(hashlib.sha256(
        f.read_text("utf-8").strip().encode()).digest()).decode() + "'" for f in files}
    assert set(allowed.group(1).split() if allowed else ()) == hashes
    for f in files:
        assert f"<script>{f.read_text('utf-8').strip()}</script>" == web.inline_script(f.stem)
        assert "</script" not in f.read_text("utf-8").lower()


def test_form_page_with_all_its_resources_is_within_8_kb_gzip(relay: Relay) -> None:
    with relay.client() as client:
        page = client.get(FORM)
    # Everything the page loads: it may reference no other resource at all.
    assert not re.search(r"""<(?:link|img|iframe|object)\b|<script\b[^>]|\bsrc=|url\(""",
                         page.text)
    assert page.headers["content-encoding"] == "gzip"
    assert page.num_bytes_downloaded <= 8 * 1024, f"{page.num_bytes_downloaded} bytes on the wire"
    size = len(gzip.compress(page.content, compresslevel=9))
    assert size <= 8 * 1024, f"form page is {size} bytes gzip"


# -- submitting -------------------------------------------------------------------------


def test_submit_shows_receipt_once_and_commits_one_row(relay: Relay,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    before, wakes = relay.rows(), len(relay.wakeups)
    with relay.client() as client:
        fields = fresh_fields(client, text="Có người mang hàng qua suối", where="tối thứ bảy")
        reply = client.post(FORM, data=fields)
    assert reply.status_code == 200, reply.text
    code = CODE.search(reply.text)
    ref = REF.search(reply.text)
    assert code is not None and ref is not None
    digits = code.group(1).replace(" ", "")
    assert parse_receipt(digits) == digits  # 16 digits and the check digit holds
    assert relay.rows() == before + 1 and len(relay.wakeups) == wakes + 1
    # Only the hash is stored; it leads to this tip.
    hasher = ReceiptHasher(derive_key(SECRET, "receipt"))
    record = relay.store.tip_by_receipt(hasher.hash(digits))
    assert record is not None and record.ref == ref.group(1) and record.station_id == "ncs"
    # Nothing the tipster typed or received is in a URL: no redirect, no link carries it.
    assert "location" not in reply.headers and reply.history == []
    assert str(reply.url) == relay.base + FORM
    urls = re.findall(r'(?:href|action|src)="([^"]*)"', reply.text)
    assert "/s/ncs/cho" in urls  # the "send another tip" link: the pattern finds URLs
    secrets_in_page = (digits, code.group(1), ref.group(1), "suối", "t%E1%BB%91i")
    assert not [u for u in urls if any(s in urllib.parse.unquote(u) or s in u
                                       for s in secrets_in_page)]
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("mailbridge")]
    assert f"accepted tip {ref.group(1)} for station ncs" in lines  # DEBUG only
    assert not any(ref.group(1) in r.getMessage() for r in caplog.records
                   if r.name.startswith("mailbridge") and r.levelname != "DEBUG")
    assert not any("127.0.0.1" in line or "suối" in line or digits in line for line in lines)
    sent = [m for m in claimed_messages(relay.store) if m["X-Mailbridge-Ref"] == ref.group(1)]
    assert len(sent) == 1
    body = sent[0].get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "Loại tin: Ma túy" in text and "Ở đâu / khi nào: tối thứ bảy" in text
    assert "Nơi dán áp phích: Chợ phiên" in text and sent[0]["X-Mailbridge-Placement"] == "cho"


def test_the_third_copy_of_a_text_is_marked_likely_spam(relay: Relay) -> None:
    text = "Tin giống hệt số 7: có người bán hàng giả ở chợ phiên mỗi sáng thứ bảy."
    refs = []
    with relay.client() as client:
        for _ in range(3):
            reply = client.post(FORM, data=fresh_fields(client, text=text))
            found = REF.search(reply.text)
            assert reply.status_code == 200 and found is not None  # the tipster is not told
            refs.append(found.group(1))
    sent = {m["X-Mailbridge-Ref"]: m for m in claimed_messages(relay.store)}
    assert [sent[r]["X-Mailbridge-Likely-Spam"] for r in refs] == [None, None, "near-duplicate"]
    assert str(sent[refs[2]]["Subject"]).startswith(f"[{refs[2]}] [spam?] ")


def test_hostile_fields_are_cleaned_not_passed_on(relay: Relay) -> None:
    hostile = ("Tha\u0302\u0301y\r\nBcc: victim@example.test\r\n<script>alert(1)</script>"
               "\x1b[31mred\x1b[0m\x1b]0;title\x07\u202eevil")
    with relay.client() as client:
        reply = client.post(FORM, data=fresh_fields(client, text=hostile,
                                                    where="chợ\r\nX-Evil: 1\x1b[2J"))
    assert reply.status_code == 200
    assert "alert(1)" not in reply.text and "<script>alert" not in reply.text
    ref = REF.search(reply.text)
    assert ref is not None
    sent = [m for m in claimed_messages(relay.store) if m["X-Mailbridge-Ref"] == ref.group(1)]
    assert len(sent) == 1
    message = sent[0]
    assert message["Bcc"] is None and message["X-Evil"] is None
    assert "\n" not in str(message["Subject"]) and "Thấy" in str(message["Subject"])
    raw = message.as_string()
    assert "\x1b" not in raw and "\u202e" not in raw and "\x07" not in raw
    html_part = message.get_body(("html",))
    assert html_part is not None
    assert "<script>" not in html_part.get_content()


@pytest.mark.parametrize(("change", "status", "says"), [
    ({"category": "weapons"}, 400, "Vui lòng chọn loại việc"),
    ({"category": "drugs\r\nBcc: x@example.test"}, 400, "Vui lòng chọn loại việc"),
    ({"category": ""}, 400, "Vui lòng chọn loại việc"),
    ({"text": "   \r\n\x1b[0m "}, 400, "Vui lòng viết những gì bạn đã thấy"),
    ({"text": "x" * 2001}, 400, "tối đa 2.000 ký tự"),
    ({"t": "123.abc.def"}, 400, "đã hết hạn hoặc đã được gửi"),
    ({"t": ""}, 400, "đã hết hạn hoặc đã được gửi"),
])
def test_bad_fields_show_the_form_again_and_store_nothing(
        relay: Relay, change: dict[str, str], status: int, says: str) -> None:
    before = relay.rows()
    with relay.client() as client:
        reply = client.post(FORM, data=fresh_fields(client, **change))
    assert reply.status_code == status
    assert says in reply.text and "class=err" in reply.text
    assert relay.rows() == before


def test_text_stays_in_the_form_after_an_error(relay: Relay) -> None:
    with relay.client() as client:
        reply = client.post(FORM, data=fresh_fields(client, category="nope",
                                                    text="<b>giữ lại</b>", lang="en"))
    assert reply.status_code == 400
    assert "&lt;b&gt;giữ lại&lt;/b&gt;</textarea>" in reply.text
    assert "Please choose what it is about." in reply.text


@pytest.mark.parametrize(("body", "content_type", "status"), [
    (b"t=x&text=%FF%FE&category=drugs", "application/x-www-form-urlencoded", 400),
    ("text=\u00e9".encode("latin-1"), "application/x-www-form-urlencoded", 400),
    (b'{"text": "x"}', "application/json", 415),
    (b"--b\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b", 400),  # part unnamed
    (b"", "", 415),
])
def test_unreadable_bodies_are_refused(relay: Relay, body: bytes, content_type: str,
                                       status: int) -> None:
    before = relay.rows()
    with relay.client() as client:
        reply = client.post(FORM + "?lang=en", content=body,
                            headers={"content-type": content_type} if content_type else {})
    assert reply.status_code == status
    assert "The form could not be read" in reply.text
    assert relay.rows() == before


def test_huge_bodies_are_refused_early(relay: Relay) -> None:
    before = relay.rows()
    big = b"text=" + b"a" * (2 * 1024 * 1024)
    with relay.client() as client:
        declared = client.post(FORM, content=big,
                               headers={"content-type": "application/x-www-form-urlencoded"})
        chunked = client.post(FORM, content=iter([big[:65536]] * 32),
                              headers={"content-type": "application/x-www-form-urlencoded"})
    for reply in (declared, chunked):
        assert reply.status_code == 413
        assert "Quá dài" in reply.text
    assert relay.rows() == before


def test_a_form_token_is_accepted_once(relay: Relay) -> None:
    before = relay.rows()
    with relay.client() as client:
        fields = fresh_fields(client)
        first = client.post(FORM, data=fields)
        again = client.post(FORM, data=fields)
        other_station = client.post("/s/pvs", data=fresh_fields(client))
    assert first.status_code == 200
    assert again.status_code == 400 and "đã hết hạn hoặc đã được gửi" in again.text
    assert other_station.status_code == 400  # a token is bound to its station
    assert relay.rows() == before + 1


def test_the_empty_form_is_rendered_once_and_each_copy_has_its_own_token(
        relay: Relay, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GET fills a fresh token into the page rendered once for its language, poster and
    switch: the same page a full render gives, and each token works once."""
    original = web.WebForm.render
    renders: list[str] = []

    def counted(self: web.WebForm, lang: str, template: str, *args: Any,
                **kwargs: Any) -> Any:
        renders.append(template)
        return original(self, lang, template, *args, **kwargs)

    before = relay.rows()
    with relay.client() as client:
        client.get(FORM + "?lang=en")  # rendered here, or by an earlier test
        monkeypatch.setattr(web.WebForm, "render", counted)
        pages = [client.get(FORM + "?lang=en").text for _ in range(2)]
        tokens = [token_of(page) for page in pages]
        sent = [client.post(FORM, data={"t": t, "lang": "en", "category": "drugs",
                                        "text": "Có người lạ"}) for t in tokens]
    assert [s.status_code for s in sent] == [200, 200] and relay.rows() == before + 2
    assert renders == ["receipt.html", "receipt.html"]  # no form page rendered again
    assert tokens[0] != tokens[1]
    station = relay.settings.station("ncs")
    assert station is not None
    full = web.WebForm(relay.settings, relay.store, lambda: None)._form_page(
        "en", station, station.placement("cho"), tokens[0], switch=True)
    assert pages[0] == bytes(full.body).decode("utf-8")


def test_over_the_rate_limit_is_429_in_the_users_language(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, rate_limit_per_hour=2)
    store = RelayStore(settings.relay.database)
    store.upgrade()
    try:
        with running(create_app(settings, store)) as base, \
                httpx.Client(base_url=base, timeout=30) as client:
            codes = [client.post(FORM, data=fresh_fields(client, lang="hmn")).status_code
                     for _ in range(2)]
            over = client.post(FORM, data=fresh_fields(client, lang="hmn", text="peb"))
        assert codes == [200, 200]
        assert over.status_code == 429
        assert "Muaj ntau qhov tshaj qhia dhau" in over.text and ">peb</textarea>" in over.text
        assert len(store.list_outbox()) == 2
    finally:
        store.close()


def test_a_full_station_is_refused_without_a_receipt_hash_until_the_hour_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database refuses the first tip past the limit (after its hash); this worker
    then refuses the station's tips at once, the text kept, until the hour ends."""
    settings = make_settings(tmp_path, station_tips_per_hour=2)
    store = RelayStore(settings.relay.database)
    store.upgrade()
    hashes: list[str] = []
    derive = ReceiptHasher.derive

    def counted(self: ReceiptHasher, code: str) -> Any:
        hashes.append(code)
        return derive(self, code)

    monkeypatch.setattr(ReceiptHasher, "derive", counted)
    try:
        with running(create_app(settings, store)) as base, \
                httpx.Client(base_url=base, timeout=30) as client:
            replies = [client.post(FORM, data=fresh_fields(client, text=f"tin {n}"))
                       for n in range(5)]
        assert [r.status_code for r in replies] == [200, 200, 503, 503, 503]
        assert len(hashes) == 3  # two tips and the one the database refused
        for reply in replies[2:]:
            assert 0 < int(reply.headers["Retry-After"]) <= 3600
            assert "CHƯA được gửi" in reply.text and CODE.search(reply.text) is None
        assert ">tin 4</textarea>" in replies[4].text
        assert len(store.list_outbox()) == 2
    finally:
        store.close()


def test_store_failure_says_not_sent_and_keeps_the_text(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = RelayStore(settings.relay.database)  # never upgraded: every write fails
    try:
        with running(create_app(settings, store)) as base, \
                httpx.Client(base_url=base, timeout=30) as client:
            reply = client.post(FORM, data=fresh_fields(client, text="xin gửi lại"))
        assert reply.status_code == 503
        assert "Tin báo CHƯA được gửi" in reply.text and ">xin gửi lại</textarea>" in reply.text
        assert "StoreError" not in reply.text and "sqlite" not in reply.text.lower()
        assert CODE.search(reply.text) is None
        store.upgrade()
        assert store.list_outbox() == []
    finally:
        store.close()


def test_a_tip_is_two_commits_and_a_failed_one_leaves_its_token_unused(
        relay: Relay, monkeypatch: pytest.MonkeyPatch) -> None:
    """The used form token is taken with the tip's ref, the message built outside the
    lock, then stored: two commits a tip. A tip whose message failed gives its token
    back, so the same form goes again."""
    commits: list[int] = []

    def count(_conn: Any) -> None:
        commits.append(1)

    sa.event.listen(relay.store.engine, "commit", count)
    try:
        with relay.client() as client:
            fields = fresh_fields(client, text="Có người mang hàng qua bản")
            original = web.WebForm._compose

            def broken(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("the message could not be built")

            monkeypatch.setattr(web.WebForm, "_compose", broken)
            failed = client.post(FORM, data=fields)
            monkeypatch.setattr(web.WebForm, "_compose", original)
            commits.clear()
            again = client.post(FORM, data=fields)
            tip_commits = len(commits)
            replay = client.post(FORM, data=fields)
    finally:
        sa.event.remove(relay.store.engine, "commit", count)
    assert failed.status_code == 503 and CODE.search(failed.text) is None
    assert again.status_code == 200 and CODE.search(again.text) is not None
    assert tip_commits == 2
    assert replay.status_code == 400 and "đã hết hạn hoặc đã được gửi" in replay.text


# -- methods, redirects, disconnects, restarts ---------------------------------------


@pytest.mark.parametrize("path", [FORM, "/s/ncs"])
def test_head_answers_as_get_does_and_sends_nothing(relay: Relay, path: str) -> None:
    before = relay.rows()
    with relay.client() as client:
        get = client.get(path)
        head = client.head(path)
        fields = fresh_fields(client, path)
        with_body = client.request("HEAD", path, content=urllib.parse.urlencode(fields),
                                   headers={"content-type": FORM_TYPE})
        assert relay.rows() == before  # a HEAD with a form in it sent no tip
        post = client.post(path, data=fields)
    for reply in (head, with_body):
        assert reply.status_code == 200 and reply.content == b""
        assert reply.headers["content-type"] == get.headers["content-type"]
        for name, value in SECURITY_HEADERS.items():
            assert reply.headers[name] == value
    assert post.status_code == 200 and CODE.search(post.text)  # the HEAD used no token
    assert relay.rows() == before + 1


def raw_get(relay: Relay, target: str, host: str) -> tuple[int, dict[str, str]]:
    """GET *target* exactly as written (httpx would normalise it), with a forged Host."""
    address, port = relay.base.removeprefix("http://").split(":")
    with socket.create_connection((address, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n"
                     f"Connection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head = reply.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    pairs = (line.split(": ", 1) for line in head[1:])
    return int(head[0].split()[1]), {name.lower(): value for name, value in pairs}


@pytest.mark.parametrize(("path", "location"), [
    ("/s/ncs/", "/s/ncs"),
    ("/s/ncs/?lang=en", "/s/ncs?lang=en"),
    ("/S/NCS/CHO/", "/S/NCS/CHO"),
    ("/healthz//", "/healthz"),
])
def test_trailing_slash_redirects_to_a_path_not_to_the_host_sent(
        relay: Relay, path: str, location: str) -> None:
    status, headers = raw_get(relay, path, "evil.example")
    assert status == 307
    assert headers["location"] == location
    assert client_get(relay, location).status_code == 200


@pytest.mark.parametrize("path", ["//evil.example/", "///s/ncs/", "//evil.example//"])
def test_no_redirect_off_the_site(relay: Relay, path: str) -> None:
    status, headers = raw_get(relay, path, "evil.example")
    assert status == 404 and "location" not in headers


def test_a_client_gone_mid_post_is_one_quiet_line(relay: Relay,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    before = relay.rows()
    with relay.client() as client:
        fields = urllib.parse.urlencode(fresh_fields(client, text="nửa chừng thì mất sóng"))
    host, port = relay.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {FORM} HTTP/1.1\r\nHost: relay\r\nContent-Type: {FORM_TYPE}\r\n"
                     f"Content-Length: {len(fields)}\r\n\r\n".encode() + fields[:20].encode())
    server_side = ("mailbridge.relay.web", "uvicorn.error")
    wait_for(lambda: any(r.name in server_side for r in caplog.records),
             "the relay to notice the client left")
    lines = [r for r in caplog.records if r.name.startswith(("mailbridge", "uvicorn"))]
    assert [(r.levelname, r.getMessage()) for r in lines if r.name in server_side] == [
        ("INFO", "a client went away before its form arrived")]
    assert not any(r.exc_info or r.levelno >= logging.WARNING for r in lines)
    assert relay.rows() == before


def test_a_used_form_token_stays_used_after_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    replies = []
    fields: dict[str, str] = {}
    for _ in range(2):  # the same database, a fresh process state each time
        store = RelayStore(settings.relay.database)
        store.upgrade()
        try:
            with running(create_app(settings, store)) as base, \
                    httpx.Client(base_url=base, timeout=30) as client:
                fields = fields or fresh_fields(client)
                replies.append(client.post(FORM, data=fields))
            rows = len(store.list_outbox())
        finally:
            store.close()
    assert replies[0].status_code == 200
    assert replies[1].status_code == 400 and "đã hết hạn hoặc đã được gửi" in replies[1].text
    assert rows == 1


def test_refused_forms_write_no_used_token_and_can_be_sent_again(tmp_path: Path) -> None:
    """Only a form that passed every check and the rate limit is recorded as used: an
    abuser posting refused forms cannot fill the database, and a villager who forgot
    the category sends the same form again."""
    settings = make_settings(tmp_path, rate_limit_per_hour=1)
    store = RelayStore(settings.relay.database)
    store.upgrade()

    def used() -> int:
        with store.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(
                sa.table("relay_form_tokens"))).scalar_one())

    try:
        with running(create_app(settings, store)) as base, \
                httpx.Client(base_url=base, timeout=30) as client:
            fields = fresh_fields(client, category="")
            assert client.post(FORM, data=fields).status_code == 400
            assert client.post(FORM, data={**fields, "text": ""}).status_code == 400
            assert used() == 0
            assert client.post(FORM, data={**fields, "category": "drugs"}).status_code == 200
            assert used() == 1
            limited = fresh_fields(client)
            assert client.post(FORM, data=limited).status_code == 429
            assert used() == 1
    finally:
        store.close()


@pytest.mark.parametrize("path", ["/", FORM, "/s/ncs", "/status", "/s/nope"])
def test_the_language_switch_is_on_every_page_and_kept_in_the_url(relay: Relay,
                                                                  path: str) -> None:
    page = client_get(relay, path + "?lang=en")
    here = "/status" if path == "/status" else ""
    assert (f'<nav aria-label="Language"><a href="{here}?lang=vi" hreflang="vi" lang="vi">'
            "Tiếng Việt</a>") in page.text
    assert "<b>English</b>" in page.text and '<html lang="en">' in page.text
    assert "set-cookie" not in page.headers


def test_the_switch_after_a_refused_follow_up_opens_the_code_field(relay: Relay) -> None:
    with relay.client() as client:
        page = client.post("/status/add", data={"lang": "hmn", "code": "1234", "text": "x"})
    assert page.status_code == 400 and '<a href="/status?lang=vi" hreflang="vi"' in page.text


def test_the_receipts_links_keep_the_language(relay: Relay) -> None:
    with relay.client() as client:
        reply = client.post(FORM, data=fresh_fields(client, lang="hmn"))
    assert reply.status_code == 200
    assert 'href="/s/ncs/cho?lang=hmn"' in reply.text and 'href="/status?lang=hmn"' in reply.text


@contextmanager
def changed_relay(folder: Path, ncs: dict[str, Any], **relay: Any) -> Iterator[httpx.Client]:
    """A relay of its own whose station ncs has the *ncs* fields changed; a client to it."""
    settings = make_settings(folder, **relay)
    station = dataclasses.replace(settings.stations["ncs"], **ncs)
    settings = dataclasses.replace(settings, stations={**settings.stations, "ncs": station})
    store = RelayStore(settings.relay.database)
    store.upgrade()
    try:
        with running(create_app(settings, store)) as base, \
                httpx.Client(base_url=base, timeout=30) as client:
            yield client
    finally:
        store.close()


def test_a_poster_opens_in_its_placements_language_and_the_url_overrides_it(
        tmp_path: Path) -> None:
    with changed_relay(tmp_path, {"placements": (Placement("cho", "Chợ phiên", "hmn"),)},
                       languages=("vi", "hmn", "en", "hmn-chv")) as client:
        poster, chosen, plain, chv = (client.get(path) for path in (
            "/S/NCS/CHO", "/s/ncs/cho?lang=vi", "/s/ncs", "/s/ncs?lang=hmn-chv"))
    assert '<html lang="hmn-Latn">' in poster.text and 'name=lang value="hmn"' in poster.text
    assert "<h1>Tshaj qhia</h1>" in poster.text and "set-cookie" not in poster.headers
    assert '<a href="?lang=vi" hreflang="vi" lang="vi">Tiếng Việt</a>' in poster.text
    assert '<html lang="vi">' in chosen.text and '<html lang="vi">' in plain.text
    assert '<html lang="hmn-Latn-VN-x-chv">' in chv.text and "<b>Hmôngz</b>" in chv.text
