"""Receipt codes, reply tokens and public references (pure, no I/O).

A receipt code is what the tipster keeps: 16 digits shown as 4-4-4-4, the
last one a Damm check digit. Damm catches every single-digit error and every
swap of two adjacent digits, which Luhn does not (09 <-> 90). Digits only, so
it can be typed on a phone keypad, written on paper or said aloud.

The code is never stored: only ``receipt_hash`` (Argon2id keyed by a
per-installation secret kept outside the database), so a lookup is a single
equality query and a stolen database alone cannot be searched offline.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw

# The Damm quasigroup of order 10 (weakly totally anti-symmetric).
_DAMM = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2),
    (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8),
    (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4),
    (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)

RECEIPT_DIGITS = 16
_NOT_DIGITS = re.compile(r"[\s\-.]")


def damm_digit(digits: str) -> int:
    """The Damm check digit of a string of decimal digits."""
    interim = 0
    for ch in digits:
        interim = _DAMM[interim][int(ch)]
    return interim


def new_receipt_code() -> str:
    """15 random digits (~50 bits) plus a Damm check digit, as 16 plain digits."""
    body = "".join(str(secrets.randbelow(10)) for _ in range(RECEIPT_DIGITS - 1))
    return body + str(damm_digit(body))


def format_receipt(code: str) -> str:
    """Group a 16-digit code as ``1234 5678 9012 3456`` for display."""
    return " ".join(code[i : i + 4] for i in range(0, len(code), 4))


def parse_receipt(typed: str) -> str | None:
    """Normalise what a person typed; None unless it is a well-formed, checked code.

    Spaces, dashes and dots between digit groups are ignored; a typo fails the
    check digit instead of silently looking up nothing.
    """
    digits = _NOT_DIGITS.sub("", typed.strip())
    if len(digits) != RECEIPT_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return digits if damm_digit(digits) == 0 else None


@dataclass(frozen=True)
class Derived:
    """What one Argon2id over a receipt code gives: the lookup hash (stored) and the
    key that opens the tip's conversation (never stored; core/conversation.py)."""

    receipt_hash: str
    seal_key: bytes


@dataclass(frozen=True)
class ReceiptHasher:
    """Argon2id over a receipt code, keyed by the installation's secret.

    The secret is the salt, so equal codes give equal hashes (one indexed
    lookup) while the hash is useless without the secret. Costs are kept
    moderate: with ~50 bits of entropy a few milliseconds per guess already
    makes an offline search hopeless (docs/THREAT-MODEL.md has the figure).
    One Argon2id serves both the lookup and the conversation's key: two
    BLAKE2b derivations of its output, neither of which reveals the other.
    """

    secret: bytes
    time_cost: int = 1
    memory_cost_kib: int = 8192
    parallelism: int = 1

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValueError("the receipt secret must be at least 16 bytes")

    def derive(self, code: str) -> Derived:
        raw = hash_secret_raw(
            secret=code.encode("ascii"),
            salt=self.secret,
            time_cost=self.time_cost,
            memory_cost=self.memory_cost_kib,
            parallelism=self.parallelism,
            hash_len=32,
            type=Type.ID,
        )
        return Derived(
            hashlib.blake2b(raw, digest_size=32, person=b"receipt-lookup").hexdigest(),
            hashlib.blake2b(raw, digest_size=32, person=b"receipt-seal").digest())

    def hash(self, code: str) -> str:
        return self.derive(code).receipt_hash


def new_reply_token() -> str:
    """160 random bits, lower-case base32: safe as an e-mail local part."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").lower()


_TOKEN = re.compile(r"^[a-z2-7]{32}$")


def is_reply_token(value: str) -> bool:
    return bool(_TOKEN.match(value))


def format_ref(prefix: str, number: int) -> str:
    """Public, per-station reference such as ``NCS-0042`` (never the receipt code)."""
    return f"{prefix.upper()}-{number:04d}"


_REF = re.compile(r"^[A-Z0-9]{1,12}-\d{4,}$")


def is_ref(value: str) -> bool:
    return bool(_REF.match(value))


def ref_number(ref: str) -> int:
    """The station's running number in a ref (``NCS-0042`` -> 42), 0 when it has none:
    the order tips were accepted in, finer than the hour their mail carries."""
    head, _, digits = ref.rpartition("-")
    return int(digits) if head and digits.isascii() and digits.isdigit() else 0


def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose (receipts, form tokens, rate limits) from the
    installation secret, so one leaked derived key does not expose the others."""
    return hashlib.blake2b(secret.encode("utf-8"), digest_size=32,
                           person=purpose.encode("ascii")[:16]).digest()
