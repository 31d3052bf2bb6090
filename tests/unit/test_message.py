"""The forwarded-message contract: built from an allow-list, parsed back the same way."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbridge.core.message import (
    BOUNDARY,
    Envelope,
    Submission,
    build_message,
    hour_of,
    message_ids,
    parse_contract,
    reply_token_of,
)
from mailbridge.core.receipts import new_reply_token


def _submission(**changes: object) -> Submission:
    base: dict[str, object] = dict(
        station_id="ncs", station_name="Đồn Biên phòng Nậm Cha", mailbox="tips@ncs.example.test",
        ref="NCS-0042", category_id="drugs", category_label="Ma túy",
        text="Có người lạ bán ma túy gần chợ.", placement_id="cho",
        placement_label="Chợ phiên", where_when="Chợ, sáng thứ bảy",
        received_hour=datetime(2026, 11, 23, 9, 47, 13, tzinfo=UTC))
    base.update(changes)
    return Submission(**base)  # type: ignore[arg-type]


ENV = Envelope("tips@relay.example.test", "relay.example.test", new_reply_token())


def _roundtrip(msg: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(msg.as_bytes(policy=default_policy.clone(linesep="\r\n")),
                                      policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_headers_follow_the_contract() -> None:
    msg = _roundtrip(build_message(_submission(), ENV))
    assert msg["From"].addresses[0].addr_spec == "tips@relay.example.test"
    assert msg["To"].addresses[0].addr_spec == "tips@ncs.example.test"
    assert msg["Reply-To"] == f"reply+{ENV.reply_token}@relay.example.test"
    assert msg["Subject"] == "[NCS-0042] Ma túy — Có người lạ bán ma túy gần chợ."
    assert msg["Message-ID"].endswith("@relay.example.test>")
    assert msg["X-Mailbridge-Ref"] == "NCS-0042"
    assert msg["X-Mailbridge-Station"] == "ncs"
    assert msg["X-Mailbridge-Category"] == "drugs"
    assert msg["X-Mailbridge-Placement"] == "cho"
    contract = parse_contract(msg)
    assert contract is not None
    assert (contract.ref, contract.station_id, contract.category_id, contract.placement_id) == (
        "NCS-0042", "ncs", "drugs", "cho")


def test_body_has_text_and_html_and_only_the_hour() -> None:
    msg = _roundtrip(build_message(_submission(), ENV))
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    text = plain.get_content()
    assert "Có người lạ bán ma túy gần chợ." in text
    assert "2026-11-23 09:00" in text
    assert "09:47" not in msg.as_string() and ":13" not in text


def test_message_ids_are_random() -> None:
    ids = {build_message(_submission(), ENV)["Message-ID"] for _ in range(50)}
    assert len(ids) == 50


def test_follow_up_threads_with_references() -> None:
    first = build_message(_submission(), ENV)
    env = Envelope(ENV.relay_address, ENV.relay_domain, ENV.reply_token,
                   references=(first["Message-ID"],))
    second = _roundtrip(build_message(_submission(text="Thêm thông tin"), env))
    assert second["In-Reply-To"] == first["Message-ID"]
    contract = parse_contract(second)
    assert contract is not None and contract.references == (first["Message-ID"],)


hostile = st.lists(st.sampled_from(
    list("ab <>&\"'\r\n\x1b[]31m\u202e\x00\x85\u2028:;") + ["\r\nBcc: x@evil.test", "<script>"]),
    max_size=40).map("".join)


@given(hostile, hostile, hostile)
def test_fields_cannot_inject_headers_markup_or_escapes(text: str, where: str, label: str) -> None:
    msg = build_message(_submission(text=text, where_when=where, placement_label=label,
                                    station_name=label), ENV)
    raw = msg.as_bytes(policy=default_policy.clone(linesep="\r\n"))
    assert b"\x1b" not in raw and b"\x00" not in raw
    parsed = _roundtrip(msg)
    assert parsed["Bcc"] is None
    assert set(parsed.keys()) <= {
        "From", "To", "Reply-To", "Subject", "Date", "Message-ID", "X-Mailbridge-Ref",
        "X-Mailbridge-Station", "X-Mailbridge-Category", "X-Mailbridge-Placement", "X-Loop",
        "MIME-Version", "Content-Type"}
    html = parsed.get_body(("html",))
    assert html is not None and "<script>" not in html.get_content()


def test_text_is_nfc() -> None:
    msg = _roundtrip(build_message(_submission(text="Ma tu\u0301y"), ENV))
    plain = msg.get_body(("plain",))
    assert plain is not None and "Ma túy" in plain.get_content()


@pytest.mark.parametrize("headers", [
    {},
    {"X-Mailbridge-Ref": "NCS-0042", "X-Mailbridge-Station": "ncs"},
    {"X-Mailbridge-Ref": "1234 5678", "X-Mailbridge-Station": "ncs",
     "X-Mailbridge-Category": "drugs"},
    {"X-Mailbridge-Ref": "NCS-0042", "X-Mailbridge-Station": "NCS; DROP",
     "X-Mailbridge-Category": "drugs"},
])
def test_look_alikes_are_not_contract_messages(headers: dict[str, str]) -> None:
    msg = EmailMessage()
    for key, value in headers.items():
        msg[key] = value
    assert parse_contract(msg) is None


def test_helpers() -> None:
    assert hour_of(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == datetime(2026, 1, 2, 3,
                                                                          tzinfo=UTC)
    assert message_ids("<a@x> <b@x>, <a@x> junk") == ("<a@x>", "<b@x>")
    token = new_reply_token()
    assert reply_token_of([f"<reply+{token}@Relay.Example.test>"], "relay.example.test") == token
    assert reply_token_of(["reply+x@other.test"], "relay.example.test") is None


@pytest.mark.parametrize("text", [
    "Có người lạ bán ma túy gần chợ.",
    f"thử\n--{BOUNDARY}\nContent-Type: text/html\n\n<b>giả</b>\n--{BOUNDARY}--\nhết",
    f"Where: --{BOUNDARY}--",
])
def test_a_tip_keeps_two_parts_whatever_its_text(text: str) -> None:
    """The fixed boundary is used only when no part contains it: no forged parts."""
    msg = _roundtrip(build_message(_submission(text=text), ENV))
    assert (msg.get_boundary() == BOUNDARY) == (BOUNDARY not in text)
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert text in parts[0].get_content().replace("\r\n", "\n")
    assert not msg.defects and not any(p.defects for p in parts)
