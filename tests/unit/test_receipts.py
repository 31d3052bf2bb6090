"""Receipt codes: the check digit catches every single-digit typo and adjacent swap."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbridge.core.receipts import (
    ReceiptHasher,
    damm_digit,
    derive_key,
    format_receipt,
    format_ref,
    is_ref,
    is_reply_token,
    new_receipt_code,
    new_reply_token,
    parse_receipt,
)

codes = st.text(alphabet="0123456789", min_size=15, max_size=15).map(
    lambda body: body + str(damm_digit(body)))


@given(codes)
def test_valid_code_parses_in_any_grouping(code: str) -> None:
    assert parse_receipt(code) == code
    assert parse_receipt(format_receipt(code)) == code
    assert parse_receipt(" " + "-".join(format_receipt(code).split()) + " ") == code


@given(codes, st.integers(0, 15), st.integers(1, 9))
def test_any_single_digit_error_is_caught(code: str, pos: int, delta: int) -> None:
    wrong = code[:pos] + str((int(code[pos]) + delta) % 10) + code[pos + 1:]
    assert parse_receipt(wrong) is None


@given(codes, st.integers(0, 14))
def test_any_adjacent_swap_is_caught(code: str, pos: int) -> None:
    if code[pos] == code[pos + 1]:
        return  # swapping equal digits changes nothing
    swapped = code[:pos] + code[pos + 1] + code[pos] + code[pos + 2:]
    assert parse_receipt(swapped) is None


@pytest.mark.parametrize("typed", ["", "123", "1234 5678 9012 345", "1234567890123456789",
                                   "abcd efgh ijkl mnop", "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦"])
def test_malformed_input_is_refused(typed: str) -> None:
    assert parse_receipt(typed) is None


def test_new_codes_are_valid_grouped_and_distinct() -> None:
    seen = {new_receipt_code() for _ in range(200)}
    assert len(seen) == 200
    for code in seen:
        assert parse_receipt(code) == code
        assert len(format_receipt(code)) == 19 and format_receipt(code).count(" ") == 3


def test_hash_is_deterministic_keyed_and_not_the_code() -> None:
    a = ReceiptHasher(derive_key("s" * 32, "receipt"))
    b = ReceiptHasher(derive_key("t" * 32, "receipt"))
    code = new_receipt_code()
    assert a.hash(code) == a.hash(code)
    assert a.hash(code) != b.hash(code)
    assert code not in a.hash(code)
    assert a.hash(code) != a.hash(new_receipt_code())


def test_derived_keys_differ_per_purpose() -> None:
    assert derive_key("x" * 32, "receipt") != derive_key("x" * 32, "form")


def test_reply_tokens_have_160_bits_and_a_strict_shape() -> None:
    tokens = {new_reply_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(is_reply_token(t) and len(t) * 5 >= 128 for t in tokens)
    assert not is_reply_token("A" * 32)
    assert not is_reply_token("a" * 31)


def test_refs() -> None:
    assert format_ref("ncs", 42) == "NCS-0042"
    assert format_ref("NCS", 12345) == "NCS-12345"
    assert is_ref("NCS-0042")
    assert not is_ref("NCS-42") and not is_ref("ncs-0042") and not is_ref("1234 5678")


def test_one_hash_gives_the_lookup_and_a_seal_key_that_is_never_the_lookup() -> None:
    hasher = ReceiptHasher(derive_key("s" * 32, "receipt"))
    code = new_receipt_code()
    derived = hasher.derive(code)
    assert derived == hasher.derive(code) and derived.receipt_hash == hasher.hash(code)
    assert len(derived.seal_key) == 32
    assert derived.seal_key.hex() != derived.receipt_hash
    assert derived.seal_key != hasher.derive(new_receipt_code()).seal_key
