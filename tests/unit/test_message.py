"""The forwarded-message contract: built from an allow-list, parsed back the same way."""

from __future__ import annotations

import email
import email.policy
import hashlib
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbridge.core import message as contract_module
from mailbridge.core.keytext import parse_public_key, public_key_text
from mailbridge.core.message import (
    BOUNDARY,
    NEAR_DUPLICATE,
    Checked,
    ContractError,
    Envelope,
    Submission,
    body_digest,
    build_message,
    compose,
    hour_of,
    message_ids,
    photo,
    reply_token_of,
    signing_key,
    verify_contract,
    voice,
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
KEY = signing_key("unit-test-secret-" + "k" * 32)
KEYS = (bytes(KEY.verify_key),)
ALLOWED = ["from", "to", "reply-to", "subject", "date", "message-id", "x-mailbridge-ref",
           "x-mailbridge-station", "x-mailbridge-category", "x-mailbridge-placement", "x-loop",
           "x-mailbridge-signature", "content-type", "mime-version"]


def _lists(msg: EmailMessage) -> dict[str, list[str]]:
    lists: dict[str, list[str]] = {}
    for name, value in msg.items():
        lists.setdefault(name.lower(), []).append(str(value))
    return lists


def _check(data: bytes, keys: tuple[bytes, ...] = KEYS) -> Checked:
    msg = email.message_from_bytes(data, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    return verify_contract(_lists(msg), body_digest(msg), keys)


def _signed(**changes: object) -> bytes:
    return compose(_submission(**changes), ENV, KEY).data


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
    assert msg["X-Mailbridge-Signature"] is None  # build_message alone does not sign
    contract = _check(compose(_submission(), ENV, KEY).data).contract
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
    first = compose(_submission(), ENV, KEY)
    env = Envelope(ENV.relay_address, ENV.relay_domain, ENV.reply_token,
                   references=(first.message_id,))
    second = compose(_submission(text="Thêm thông tin"), env, KEY).data
    assert email.message_from_bytes(second)["In-Reply-To"] == first.message_id
    contract = _check(second).contract
    assert contract is not None and contract.references == (first.message_id,)


hostile = st.lists(st.sampled_from(
    list("ab <>&\"'\r\n\x1b[]31m\u202e\x00\x85\u2028:;") + ["\r\nBcc: x@evil.test", "<script>"]),
    max_size=40).map("".join)


@given(hostile, hostile, hostile)
def test_fields_cannot_inject_headers_markup_or_escapes(text: str, where: str, label: str) -> None:
    raw = _signed(text=text, where_when=where, placement_label=label, station_name=label)
    assert b"\x1b" not in raw and b"\x00" not in raw
    parsed = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Bcc"] is None
    assert set(k.lower() for k in parsed) <= set(ALLOWED)
    html = parsed.get_body(("html",))
    assert html is not None and "<script>" not in html.get_content()


# Encoded words (whole, split by spaces or folds, in every case and encoding), every
# line break Python or a mail client knows, folding whitespace, and header look-alikes.
_ENCODED = [
    "=?utf-8?q?=0D=0ABcc=3A_victim=40evil.test?=", "=?UTF-8?B?DQpCY2M6IHhAZXZpbC50ZXN0?=",
    "=?utf-8?q?=0AX-Mailbridge-Ref=3A_NCS-0001?=", "=?iso-8859-1?q?=0D=0AReply-To=3A_a=40b?=",
    "=?utf-8?q?", "?=", "=?", "=", "?", "q?", "B?", "=0D=0A", "\r\n", "\n", "\r", "\x85",
    "\u2028", "\u2029", "\x0b", "\x0c", "\t", " ", "  ", "\r\n ", "\n\t",
    "Bcc: x@evil.test", "Message-ID: <forged@relay.example.test>", "X-Mailbridge-Category: other",
    "In-Reply-To: <victim@relay.example.test>", "ma túy", "đường mòn", ":", ";", "<", ">",
]
header_hostile = st.lists(st.sampled_from(_ENCODED), max_size=12).map("".join)


@settings(deadline=None)
@given(header_hostile, header_hostile)
def test_encoded_words_and_line_breaks_never_become_header_lines(text: str, name: str) -> None:
    """Whatever the tipster says, the tip goes out with exactly the allow-listed headers.
    A hostile station name (the admin's) may instead be refused, never injected."""
    try:
        raw = _signed(text=text, station_name=name or "x", placement_label=name)
    except ContractError:
        raw = _signed(text=text)
    parsed = email.message_from_bytes(raw, policy=default_policy)
    names = [k.lower() for k in parsed]
    assert sorted(names) == sorted(set(names)) and set(names) <= set(ALLOWED)
    assert names.count("x-mailbridge-ref") == 1 and parsed["X-Mailbridge-Ref"] == "NCS-0042"
    assert parsed["X-Mailbridge-Category"] == "drugs"
    assert "=?" not in str(parsed["Subject"])
    checked = _check(raw)
    assert checked.contract is not None and checked.contract.ref == "NCS-0042", checked


def test_the_parse_back_check_refuses_what_the_email_package_would_inject(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a header value with an encoded CRLF (as if neutralising had a gap), this
    Python writes it out as a real header line: the check after building must catch it,
    and nothing is returned to store."""
    evil = "[NCS-0042] =?utf-8?q?=0D=0ABcc=3A_victim=40evil.test?= het"
    real_headers = contract_module._headers

    def leaky(*args: object) -> list[tuple[str, str, str | None]]:
        return [(n, evil, None) if n == "Subject" else (n, v, f)
                for n, v, f in real_headers(*args)]  # type: ignore[arg-type]

    monkeypatch.setattr(contract_module, "_headers", leaky)
    injected = email.message_from_bytes(build_message(_submission(), ENV).as_bytes())
    if injected["Bcc"] is None:
        pytest.skip("this Python's email package no longer re-emits decoded line breaks")
    with pytest.raises(ContractError, match="did not come out as written"):
        compose(_submission(), ENV, KEY)


def _tampered(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert old in raw
    return raw.replace(old, new, 1)


@pytest.mark.parametrize(("old", "new", "problem"), [
    (b"X-Mailbridge-Ref: NCS-0042", b"X-Mailbridge-Ref: NCS-0043", "does not match"),
    (b"X-Mailbridge-Category: drugs", b"X-Mailbridge-Category: other", "does not match"),
    (b"X-Mailbridge-Placement: cho", b"X-Mailbridge-Placement: truong", "does not match"),
    (b"X-Mailbridge-Station: ncs", b"X-Mailbridge-Station: mlt", "does not match"),
    (b"Message-ID: <", b"Message-ID: <x", "does not match"),
    (b"X-Loop:", b"In-Reply-To: <victim@relay.example.test>\r\nX-Loop:", "does not match"),
    (b"X-Mailbridge-Ref: NCS-0042", b"X-Mailbridge-Ref: NCS-0042\r\nX-Mailbridge-Ref: NCS-0001",
     "appears more than once"),
    (b"X-Mailbridge-Signature: v=1", b"X-Mailbridge-Signature: v=2", "version"),
    (b"X-Mailbridge-Station: ncs", b"X-Mailbridge-Station: n c s", "malformed"),
])
def test_a_changed_contract_header_is_caught(old: bytes, new: bytes, problem: str) -> None:
    checked = _check(_tampered(_signed(), old, new))
    assert checked.present and checked.contract is None
    assert problem in checked.problem


def test_the_likely_spam_mark_is_signed_both_ways() -> None:
    """Marked: in the subject and a signed header. Neither stripped nor added unseen."""
    marked = _signed(likely_spam=NEAR_DUPLICATE)
    checked = _check(marked)
    assert checked.contract is not None and checked.contract.likely_spam == NEAR_DUPLICATE
    msg = email.message_from_bytes(marked, policy=default_policy)
    assert str(msg["Subject"]).startswith("[NCS-0042] [spam?] Ma túy — ")
    stripped = _tampered(marked, b"X-Mailbridge-Likely-Spam: near-duplicate\r\n", b"")
    assert "does not match" in _check(stripped).problem
    added = _tampered(_signed(), b"X-Loop:", b"X-Mailbridge-Likely-Spam: near-duplicate\r\nX-Loop:")
    assert "does not match" in _check(added).problem
    odd = _tampered(marked, b"Likely-Spam: near-duplicate", b"Likely-Spam: maybe")
    assert _check(odd).malformed
    assert _check(_signed()).contract.likely_spam == ""  # type: ignore[union-attr]


def test_a_changed_body_a_foreign_key_or_no_signature_is_caught() -> None:
    raw = _signed(text="Có người lạ bán ma túy gần chợ.")
    msg = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    plain = msg.get_body(("plain",))
    assert plain is not None
    plain.set_content(plain.get_content().replace("gần chợ", "ở trường"), charset="utf-8")
    assert "body was changed" in verify_contract(_lists(msg), body_digest(msg), KEYS).problem
    other = (bytes(signing_key("another-secret-" + "z" * 32).verify_key),)
    assert "does not trust" in _check(raw, other).problem
    unsigned = build_message(_submission(), ENV).as_bytes()
    assert "not signed" in _check(unsigned).problem


def test_signature_survives_reencoding_and_header_only_checks() -> None:
    """Servers turn 8bit into quoted-printable and LF into CRLF; a header-only fetch
    (a message over the size limit) still proves the headers."""
    raw = _signed(text="Xe tải chở hàng qua đường mòn\nlúc nửa đêm")
    msg = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    for part in msg.walk():
        if not part.is_multipart():
            part.set_content(part.get_content(), subtype=part.get_content_subtype(),
                             charset="utf-8", cte="quoted-printable")
    assert _check(msg.as_bytes(policy=default_policy.clone(linesep="\r\n"))).contract
    header = raw.partition(b"\r\n\r\n")[0]
    parsed = email.message_from_bytes(header, policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    assert verify_contract(_lists(parsed), None, KEYS).contract is not None


def test_attachments_are_signed_named_and_listed_by_their_sha256() -> None:
    """A tip may be a photo or a voice message alone; each cleaned file is a part
    after the text, under its fixed name, its SHA-256 in both bodies, and signed."""
    files = (photo(1, b"\xff\xd8 jpeg bytes"), photo(2, b"\xff\xd8 more"),
             voice(1, b"\x00\x00\x00\x18ftypM4A "))
    raw = _signed(text="", attachments=files)
    assert _check(raw).contract is not None
    msg = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    found = [(p.get_filename(), p.get_content_type(), p.get_content())
             for p in msg.iter_attachments()]
    assert found == [("anh-1.jpg", "image/jpeg", files[0].data),
                     ("anh-2.jpg", "image/jpeg", files[1].data),
                     ("ghi-am-1.m4a", "audio/mp4", files[2].data)]
    for kind in ("plain", "html"):
        body = msg.get_body((kind,))
        assert body is not None
        for att in files:
            assert hashlib.sha256(att.data).hexdigest() in body.get_content()
    for part in msg.walk():  # any changed byte of a file is a changed body
        if part.get_filename() == "anh-2.jpg":
            part.set_content(b"\xff\xd8 other", maintype="image", subtype="jpeg",
                             filename="anh-2.jpg")
    assert "body was changed" in verify_contract(_lists(msg), body_digest(msg), KEYS).problem


def test_ids_match_case_insensitively_and_public_keys_round_trip() -> None:
    checked = _check(_signed(station_id="NCS", placement_id="Cho"))
    assert checked.contract is not None
    assert (checked.contract.station_id, checked.contract.placement_id) == ("ncs", "cho")
    assert parse_public_key(public_key_text(KEY)) == KEYS[0]
    with pytest.raises(ValueError, match="32"):
        parse_public_key("AAAA")


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
    checked = verify_contract(_lists(msg), body_digest(msg), KEYS)
    assert checked.contract is None and checked.present == bool(headers)


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


def test_the_policy_makes_each_header_class_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPython's registry makes a new class at every lookup; compose's makes one per
    header, and the bytes are the standard library's, byte for byte."""
    registry = contract_module.POLICY.header_factory
    assert registry["Subject"] is registry["subject"]  # type: ignore[index]
    assert contract_module.SMTP.header_factory is registry
    envelope = Envelope("tips@relay.example.test", "relay.example.test", "a" * 32,
                        message_id="<fixed@relay.example.test>")
    moment = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    ours = compose(_submission(), envelope, KEY, now=moment).data
    monkeypatch.setattr(contract_module, "POLICY", default_policy)
    monkeypatch.setattr(contract_module, "SMTP", email.policy.SMTP)
    assert compose(_submission(), envelope, KEY, now=moment).data == ours
