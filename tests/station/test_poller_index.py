"""The pure mailbox-to-ledger mapping, table-driven: no server, no database."""

from __future__ import annotations

import email
import unicodedata
from email.message import EmailMessage
from email.policy import default as default_policy

import hypothesis
import pytest
from hypothesis import strategies as hst

from mailbridge.core.text import clean_text, first_words
from mailbridge.station.poller.imap import folder_name, parse_uid_set, uid_set
from mailbridge.station.poller.index import (
    decode_bytes,
    index_message,
    preview,
    synthetic_message_id,
)
from mailbridge.station.poller.maildir import parse_name
from mailbridge.station.records import MessageKind
from tests.station.poller_helpers import RELAY, RELAY_ID, plain, tip

VI = "Có người vượt biên ở chợ phiên"
NFC_VI = unicodedata.normalize("NFC", VI)


def test_relay_tip_is_a_tip_with_contract_fields() -> None:
    ind = index_message(tip("NCS-0042", VI), relay=RELAY_ID)
    assert ind.kind is MessageKind.TIP
    assert (ind.ref, ind.category, ind.placement, ind.contract_station) == \
        ("NCS-0042", "border", "cho-phien", "ncs")
    assert ind.tip_text.startswith(NFC_VI)
    assert ind.received_hour is not None and ind.received_hour.minute == 0
    assert ind.problems == ()


def test_relay_message_with_references_is_a_followup() -> None:
    ind = index_message(tip("NCS-0042", references=("<a@relay.example.test>",)),
                        relay=RELAY_ID)
    assert ind.kind is MessageKind.FOLLOWUP
    assert ind.references == ("<a@relay.example.test>",)


def test_contract_headers_from_another_sender_are_not_a_tip() -> None:
    raw = tip("NCS-0042").replace(RELAY.encode(), b"forger@example.org")
    ind = index_message(raw, relay=RELAY_ID)
    assert ind.kind is MessageKind.AUTO  # it carries our loop header: never a tip
    assert not ind.is_relay


@pytest.mark.parametrize(("headers", "sender"), [
    ({"Auto-Submitted": "auto-replied"}, "someone@example.org"),
    ({"Precedence": "bulk"}, "someone@example.org"),
    ({"Precedence": "junk"}, "someone@example.org"),
    ({"Return-Path": "<>"}, "someone@example.org"),
    ({"X-Autoreply": "yes"}, "someone@example.org"),
    ({}, "MAILER-DAEMON@example.org"),
    ({"X-Loop": "mailbridge"}, "someone@example.org"),
])
def test_auto_mail_is_never_a_tip(headers: dict[str, str], sender: str) -> None:
    raw = plain("[NCS-0042] Out of office", sender=sender, headers=headers)
    assert index_message(raw, relay=RELAY_ID).kind is MessageKind.AUTO


def test_auto_submitted_no_is_ordinary_mail() -> None:
    raw = plain("hello", headers={"Auto-Submitted": "no"})
    assert index_message(raw, relay=RELAY_ID).kind is MessageKind.OTHER


def test_dsn_is_auto() -> None:
    raw = (b"From: MAILER-DAEMON@mx.example.org\r\nTo: s@example.test\r\nSubject: Undelivered\r\n"
           b"Message-ID: <dsn1@mx.example.org>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\n"
           b"Content-Type: message/delivery-status\r\n\r\nAction: failed\r\n--b--\r\n")
    assert index_message(raw, relay=RELAY_ID).kind is MessageKind.AUTO


@pytest.mark.parametrize(("subject", "ref"), [
    ("Re: [NCS-0007] Vượt biên — xe máy", "NCS-0007"),
    ("Subject[#123]Extra", ""),
    ("Re: NCS-0007 without brackets", ""),
    ("[ncs-0007] lower case", "NCS-0007"),
])
def test_subject_tag(subject: str, ref: str) -> None:
    assert index_message(plain(subject), relay=RELAY_ID).ref == ref


def test_missing_message_id_gets_a_stable_synthetic_one() -> None:
    raw = plain("no id", message_id=None)
    first = index_message(raw, relay=RELAY_ID)
    assert first.message_id == synthetic_message_id(first.raw_sha256)
    assert index_message(raw, relay=RELAY_ID).message_id == first.message_id


def _mime(charset: str, body: bytes, *, subject: bytes = b"poison") -> bytes:
    return (b"From: a@example.org\r\nTo: s@example.test\r\nSubject: " + subject +
            b"\r\nMessage-ID: <p@example.org>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=" + charset.encode() +
            b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body)


def test_windows_1258_decodes_to_nfc() -> None:
    # cp1258 spells Vietnamese with combining tone marks; the ledger keeps NFC.
    body = b"Ti\xea\xecng Vi\xea\xf2t"  # e-circumflex + combining acute / dot below
    subject = b"=?windows-1258?q?" + "".join(f"={b:02X}" for b in body).encode() + b"?="
    ind = index_message(_mime("windows-1258", body, subject=subject), relay=RELAY_ID)
    assert ind.text_body == "Tiếng Việt"
    assert ind.subject == "Tiếng Việt"
    assert unicodedata.is_normalized("NFC", ind.text_body)
    assert ind.problems == ()


def test_split_encoded_word_is_joined() -> None:
    data = "Tiếng Việt".encode()
    cut = 3  # inside the multi-byte "ế"
    words = b" ".join(b"=?utf-8?q?" + "".join(f"={b:02X}" for b in part).encode() + b"?="
                      for part in (data[:cut], data[cut:]))
    ind = index_message(_mime("utf-8", b"x", subject=words), relay=RELAY_ID)
    assert ind.subject == "Tiếng Việt"


def test_raw_8bit_header_is_decoded() -> None:
    ind = index_message(_mime("utf-8", b"x", subject=VI.encode()), relay=RELAY_ID)
    assert ind.subject == NFC_VI


@pytest.mark.parametrize(("charset", "body", "text", "quarantined"), [
    ("bogus", VI.encode(), NFC_VI, True),
    ("iso-8859-8-i", "שלום".encode("iso-8859-8"), "שלום", False),
    ("us-ascii", VI.encode(), NFC_VI, False),
    ("utf-8", b"\xff\xfe broken", "\ufffd\ufffd broken", True),
])
def test_bad_charsets_decode_or_quarantine(charset: str, body: bytes, text: str,
                                           quarantined: bool) -> None:
    ind = index_message(_mime(charset, body), relay=RELAY_ID)
    assert ind.text_body == text
    assert bool(ind.problems) is quarantined


def test_truncated_multipart_is_flagged_but_indexed() -> None:
    raw = (b"From: a@example.org\r\nSubject: cut\r\nMessage-ID: <cut@example.org>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
           b"--zz\r\nContent-Type: text/plain\r\n\r\nstill readable\r\n--zz\r\n"
           b"Content-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n\r\n/9j/4AAQ")
    ind = index_message(raw, relay=RELAY_ID)
    assert ind.text_body == "still readable"
    assert any("Boundary" in p for p in ind.problems)


def test_headers_only_placeholder() -> None:
    raw = plain("huge").split(b"\n\n", 1)[0] + b"\n\n"
    ind = index_message(raw, relay=RELAY_ID, size=60_000_000, headers_only=True)
    assert (ind.kind, ind.size, ind.text_body) == (MessageKind.PLACEHOLDER, 60_000_000, "")


def test_decode_bytes_reports_unknown_charset() -> None:
    assert decode_bytes(b"abc", "x-nonsense") == ("abc", "unknown charset 'x-nonsense'")


@pytest.mark.parametrize(("uids", "text"), [
    ([1, 2, 3, 5], "1:3,5"), ([7], "7"), ([], ""), ([4, 2, 3, 10, 11], "2:4,10:11"),
])
def test_uid_sets_round_trip(uids: list[int], text: str) -> None:
    assert uid_set(uids) == text
    assert parse_uid_set(text) == set(uids)


def test_folder_names_accept_modified_utf7() -> None:
    assert folder_name("&ARAA4w- x&Hu0- l&AP0-") == "Đã xử lý"
    assert folder_name("Đã xử lý") == "Đã xử lý"
    assert folder_name("Tom & Jerry") == "Tom & Jerry"


def test_maildir_names() -> None:
    assert parse_name("1700.M1P2.host:2,FS") == ("1700.M1P2.host", ("\\Flagged", "\\Seen"))
    assert parse_name("1700.M1P2.host") == ("1700.M1P2.host", ())


def test_hostile_header_sizes_are_bounded_to_the_ledger_columns() -> None:
    long_id = "<" + "x" * 900 + "@example.org>"
    raw = plain("Re: [NCS-0001] ok", sender=("a" * 400) + "@example.org",
                headers={"In-Reply-To": long_id, "References": f"{long_id} <ok@example.org>"})
    ind = index_message(raw, relay=RELAY_ID)
    assert ind.in_reply_to == ""
    assert ind.references == ("<ok@example.org>",)
    assert len(ind.sender) <= 320


@hypothesis.settings(max_examples=300, deadline=None, database=None)
@hypothesis.given(text=hst.lists(hst.sampled_from(
    [" ", "  ", "\n", "\t", "a", "ơ", "\u0301", "\u0323", "o", "\u00a0", "\u3000", "x" * 150,
     "Có người lạ ", "word "]), max_size=120).map("".join))
def test_bounded_preview_equals_the_preview_of_the_whole_text(text: str) -> None:
    clean = clean_text(text)  # previews are taken of clean bodies
    assert preview(clean) == first_words(clean, max_length=200)
    assert preview(clean, 20) == first_words(clean, max_length=20)


def _body_changed(raw: bytes) -> bytes:
    msg = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    plain_part = msg.get_body(("plain",))
    assert plain_part is not None and "vượt biên" in plain_part.get_content()
    plain_part.set_content(plain_part.get_content().replace("vượt biên", "buôn lậu"))
    return msg.as_bytes()


def _relay_look_alike(ref: str, **extra: str) -> bytes:
    """What anyone who knows the station's address can send: the relay's From and headers."""
    headers = {"X-Mailbridge-Ref": ref, "X-Mailbridge-Station": "ncs",
               "X-Mailbridge-Category": "drugs", "X-Loop": "mailbridge", **extra}
    return plain(f"[{ref}] Ma túy — giả", "giả mạo\n", sender=RELAY, headers=headers)


@pytest.mark.parametrize(("raw", "why"), [
    (_relay_look_alike("NCS-0042"), "not signed"),
    (_relay_look_alike("NCS-0042", **{"X-Mailbridge-Signature": "v=1; k=x; b=y; s=z"}),
     "does not trust"),
    (tip("NCS-0042").replace(b"X-Mailbridge-Ref: NCS-0042", b"X-Mailbridge-Ref: NCS-0007"),
     "does not match"),
    (tip("NCS-0042").replace(b"X-Loop:", b"X-Mailbridge-Ref: NCS-0001\r\nX-Loop:"),
     "more than once"),
    (_body_changed(tip("NCS-0042")), "body was changed"),
    (plain("hello", sender=RELAY), "no contract headers"),
])
def test_mail_that_only_claims_to_be_the_relays_is_forged(raw: bytes, why: str) -> None:
    ind = index_message(raw, relay=RELAY_ID)
    assert ind.kind is MessageKind.FORGED and not ind.is_relay
    assert why in ind.warning and ind.ref == ""


def test_ids_match_case_insensitively_and_bad_shapes_are_quarantined_with_the_reason() -> None:
    upper = index_message(tip("NCS-0042", station="NCS"), relay=RELAY_ID)
    assert upper.kind is MessageKind.TIP and upper.contract_station == "ncs"
    raw = _relay_look_alike("NCS-0042", **{"X-Mailbridge-Placement": "cho phien"})
    ind = index_message(raw, relay=RELAY_ID)
    assert ind.kind is MessageKind.QUARANTINED
    assert ind.problems == ("contract header: X-Mailbridge-Placement is malformed: 'cho phien'",)
    assert "station mailbox" not in ind.warning


def test_a_tip_over_the_size_limit_is_a_tip_from_its_header_alone() -> None:
    raw = tip("NCS-0042")
    header = raw.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
    ind = index_message(header, relay=RELAY_ID, size=10**8, headers_only=True)
    assert ind.kind is MessageKind.TIP and ind.ref == "NCS-0042"
    assert ind.problems == ()  # no quarantine row beside the placeholder
    assert ind.warning == "too large: only the header was indexed"


@pytest.mark.parametrize("text", [
    "Có người lạ mang hàng qua đường mòn ban đêm",
    "lạ mang hàng",
    "Xe tải chở gỗ lậu đi về phía bản Nậm Cắn lúc 3 giờ sáng, biển số 29C",
    "ma túy ma túy ma túy ma túy ma túy ma túy ma túy ma túy ma túy",
])
def test_subjects_keep_the_spaces_the_relay_wrote(text: str) -> None:
    raw = tip("NCS-0042", text)
    written = email.message_from_bytes(raw, policy=default_policy)["Subject"]
    assert index_message(raw, relay=RELAY_ID).subject == str(written)


@hypothesis.settings(deadline=None, max_examples=60)
@hypothesis.given(hst.lists(hst.sampled_from(["lạ", "mang", "đường", "mòn", "a", "b", "túy", "—",
                                               "x" * 30, "Nậm", "Cắn", "12", ",", "."]),
                            min_size=1, max_size=20))
def test_any_subject_reads_back_as_written(words: list[str]) -> None:
    raw = tip("NCS-0042", " ".join(words))
    written = email.message_from_bytes(raw, policy=default_policy)["Subject"]
    assert index_message(raw, relay=RELAY_ID).subject == str(written)
