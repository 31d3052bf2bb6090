"""Text hygiene: nothing typed into the form can become a header, markup or an escape."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbridge.core.text import clean_text, first_words, is_slug, one_line


@pytest.mark.parametrize(("raw", "expected"), [
    ("a\r\nb\rc", "a\nb\nc"),
    ("red \x1b[31mALERT\x1b[0m", "red ALERT"),
    ("title \x1b]0;pwned\x07 x", "title  x"),
    ("csi \x9b2J x", "csi  x"),
    ("nul\x00 bell\x07 del\x7f", "nul bell del"),
    ("abc\u202edcba", "abcdcba"),
    ("Ma tu\u0301y", "Ma túy"),  # decomposed -> NFC
    ("  padded \n", "padded"),
])
def test_clean_text(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


@given(st.text())
def test_one_line_is_safe_anywhere(raw: str) -> None:
    line = one_line(raw)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert all(unicodedata.category(c) != "Cc" for c in line)
    assert unicodedata.is_normalized("NFC", line)


@given(st.text(st.characters(codec="utf-8")) | st.text(alphabet="a \r\n\t\x1b[]0;\x07\x9b"
                                                         "\x85\u2028\u202e\u2066\u200e\u0301"))
def test_clean_text_leaves_no_control_or_bidi_character(raw: str) -> None:
    text = clean_text(raw)
    assert all(c in "\n\t" or unicodedata.category(c) != "Cc" for c in text)
    assert not set(text) & set("\r\x85\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
                               "\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
    assert unicodedata.is_normalized("NFC", text)


@given(st.text(min_size=1), st.integers(10, 80))
def test_first_words_is_bounded(raw: str, limit: int) -> None:
    assert len(first_words(raw, max_length=limit)) <= limit


def test_first_words_cuts_on_a_word() -> None:
    text = "Có người lạ mang nhiều gói hàng qua đường mòn sau chợ vào tối thứ bảy"
    preview = first_words(text, max_length=30)
    assert preview.endswith("…") and text.startswith(preview[:-1])
    assert text[len(preview) - 1] == " "


@pytest.mark.parametrize(("value", "ok"), [("ncs", True), ("tram-y-te", True), ("NCS", False),
                                           ("", False), ("a b", False), ("chợ", False),
                                           ("-x", False), ("a" * 33, False)])
def test_is_slug(value: str, ok: bool) -> None:
    assert is_slug(value) is ok
