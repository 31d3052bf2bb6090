"""The relay's Ed25519 public key as the station side's config writes it.

Apart from ``message`` so that reading a config (every command, the officers' UI
first of all) does not load the e-mail and signing stack to check 44 characters.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nacl.signing import SigningKey, VerifyKey


def public_key_text(key: SigningKey | VerifyKey) -> str:
    """The public half as the station side's config writes it (base64, 44 characters)."""
    verify = getattr(key, "verify_key", key)  # a SigningKey's public half, or the key itself
    return base64.b64encode(bytes(verify)).decode("ascii")


def parse_public_key(text: str) -> bytes:
    """A ``public_key_text`` back to its raw bytes; ValueError naming what is wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except binascii.Error as exc:
        raise ValueError("is not base64") from exc
    if len(raw) != 32:
        raise ValueError(f"holds {len(raw)} bytes, an Ed25519 public key has 32")
    return raw
