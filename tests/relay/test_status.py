"""The tipster's /status page served for real (uvicorn, a real SQLite store): the receipt
code opens replies, adds information as a threaded follow-up, and is rate-limited."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailbridge.core.receipts import damm_digit, new_receipt_code
from mailbridge.relay.store import RelayStore
from mailbridge.relay.web import SECURITY_HEADERS, create_app
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

ACTIONS = re.compile(r'action="([^"]*)"')


@contextmanager
def status_relay(folder: Path, **relay: Any) -> Iterator[Relay]:
    settings = make_settings(folder, **relay)
    store = RelayStore(settings.relay.database)
    store.upgrade()
    wakeups: list[int] = []
    try:
        with running(create_app(settings, store, on_accepted=lambda: wakeups.append(1))) as base:
            yield Relay(base, store, settings, wakeups)
    finally:
        store.close()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    with status_relay(tmp_path) as r:
        yield r


def send_tip(client: httpx.Client, text: str = "Có người lạ ở bến sông") -> tuple[str, str]:
    """Send a tip through the form; its receipt code (as shown) and ref."""
    receipt = client.post(FORM, data=fresh_fields(client, text=text))
    assert receipt.status_code == 200, receipt.text
    code = CODE.search(receipt.text)
    ref = re.search(r"\b(NCS-\d{4})\b", receipt.text)
    assert code is not None and ref is not None
    return code.group(1), ref.group(1)


def look_up(client: httpx.Client, code: str, lang: str = "en") -> httpx.Response:
    return client.post("/status", data={"code": code, "lang": lang})


def one_wrong_digit(code: str) -> str:
    digits = code.replace(" ", "")
    wrong = digits[:5] + str((int(digits[5]) + 1) % 10) + digits[6:]
    assert wrong != digits
    return wrong


def client_get(relay: Relay, path: str) -> httpx.Response:
    with relay.client() as client:
        return client.get(path)


def test_the_receipt_links_to_status_and_status_asks_for_the_code(relay: Relay) -> None:
    with relay.client() as client:
        receipt = client.post(FORM, data=fresh_fields(client, lang="en"))
        assert 'href="/status?lang=en"' in receipt.text
        page = client.get("/status?lang=en")
    assert page.status_code == 200
    assert "Type the receipt code" in page.text
    assert ACTIONS.findall(page.text) == ["/status"]
    assert "<script" not in page.text


@pytest.mark.parametrize(("lang", "title"), [
    ("vi", "Phản hồi cho tin báo của bạn"),
    ("hmn", "Cov lus teb rau koj qhov tshaj qhia"),
    ("en", "Replies to your tip"),
])
def test_status_in_each_language(relay: Relay, lang: str, title: str) -> None:
    page = client_get(relay, f"/status?lang={lang}")
    assert f"<h1>{title}</h1>" in page.text


def test_received_then_delivered_then_the_reply_with_its_day(relay: Relay) -> None:
    with relay.client() as client:
        code, ref = send_tip(client)
        page = look_up(client, code)
        assert page.status_code == 200
        assert f"Your tip {ref}" in page.text
        assert "Received: yes" in page.text and "Delivered to the station: not yet" in page.text
        assert "No reply yet" in page.text
        (claim,) = relay.store.claim_due(10, timedelta(minutes=5))
        assert relay.store.mark_delivered(claim)
        tip = email.message_from_bytes(claim.message, policy=email.policy.default)
        reply_token = str(tip["Reply-To"]).partition("+")[2].partition("@")[0]
        assert relay.store.add_reply(reply_token, "Cảm ơn. Chúng tôi sẽ đến xem.",
                                     station_id="ncs")
        page = look_up(client, code.replace(" ", "-"))
    assert "Delivered to the station: yes" in page.text
    assert "Cảm ơn. Chúng tôi sẽ đến xem." in page.text
    assert re.search(r"<b>Đồn Biên phòng Nậm Cha, \w{3} \d{1,2}, \d{4}:</b>", page.text)
    # nothing of the station's mail reaches the tipster: its address, the reply token
    assert relay.settings.stations["ncs"].mailbox not in page.text
    assert reply_token not in page.text and "reply+" not in page.text
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value


def test_a_code_with_one_wrong_digit_says_check_the_code_and_counts_no_lookup(
        tmp_path: Path) -> None:
    with status_relay(tmp_path, status_lookups_per_hour=1) as relay, relay.client() as client:
        code, _ = send_tip(client)
        for _ in range(5):
            page = look_up(client, one_wrong_digit(code))
            assert page.status_code == 400
            assert "Check the code" in page.text
        page = look_up(client, code)  # the one lookup allowed: typos spent none of it
        assert page.status_code == 200, page.text
        assert look_up(client, code).status_code == 429


def guess() -> str:
    body = new_receipt_code()[:15]
    return body + str(damm_digit(body))


def test_a_guessing_loop_hits_the_network_limit(tmp_path: Path) -> None:
    with status_relay(tmp_path, status_lookups_per_hour=5) as relay, relay.client() as client:
        statuses = [look_up(client, guess()).status_code for _ in range(8)]
    assert statuses == [404] * 5 + [429] * 3


def test_a_guessing_loop_over_many_networks_hits_the_total_limit(tmp_path: Path) -> None:
    with status_relay(tmp_path, status_lookups_per_hour=5, status_lookups_total_per_hour=3,
                      trusted_proxies=("127.0.0.1",)) as relay, relay.client() as client:
        statuses = [client.post("/status", data={"code": guess()},
                                headers={"x-forwarded-for": f"198.51.{n}.7"}).status_code
                    for n in range(5)]
    assert statuses == [404, 404, 404, 429, 429]


def test_the_code_never_travels_in_a_url(relay: Relay) -> None:
    with relay.client() as client:
        code, ref = send_tip(client)
        page = client.get("/status", params={"code": code, "lang": "en"})
        assert ref not in page.text  # a code in the query string opens nothing
        opened = look_up(client, code)
    assert sorted(ACTIONS.findall(opened.text)) == ["/status/add"]
    assert code.replace(" ", "") not in "".join(ACTIONS.findall(opened.text))
    assert "<script src" not in opened.text  # inline, hash-allowed scripts only


def test_added_information_is_a_threaded_followup_of_the_tip(relay: Relay) -> None:
    with relay.client() as client:
        code, ref = send_tip(client)
        (tip,) = claimed_messages(relay.store)
        opened = look_up(client, code)
        fields = {"t": token_of(opened.text), "lang": "en", "code": code,
                  "text": "Chiếc xe tải màu xanh, biển số 24C."}
        added = client.post("/status/add", data=fields)
        assert added.status_code == 200, added.text
        assert "Sent. The station will receive it." in added.text
        assert "<b>You, " in added.text and "Chiếc xe tải màu xanh" in added.text
        again = client.post("/status/add", data=fields)  # a reload sends it again
        assert again.status_code == 400
    (followup,) = claimed_messages(relay.store)
    assert followup["In-Reply-To"] == tip["Message-ID"]
    assert followup["References"] == tip["Message-ID"]
    assert followup["X-Mailbridge-Ref"] == ref
    assert followup["Reply-To"] == tip["Reply-To"]
    assert followup["Message-ID"] != tip["Message-ID"]
    body = followup.get_body(("plain",))
    assert body is not None and "Chiếc xe tải màu xanh" in body.get_content()
    assert [r.ref for r in relay.store.list_outbox()] == [ref, f"{ref}+1"]
    assert len(relay.wakeups) == 2


def test_an_empty_addition_is_refused_and_nothing_is_queued(relay: Relay) -> None:
    with relay.client() as client:
        code, _ = send_tip(client)
        opened = look_up(client, code)
        refused = client.post("/status/add", data={"t": token_of(opened.text), "lang": "en",
                                                   "code": code, "text": "  "})
    assert refused.status_code == 400
    assert len(relay.store.list_outbox()) == 1
