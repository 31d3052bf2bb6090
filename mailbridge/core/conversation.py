"""Sealing a conversation between a station and a tipster (pure, no I/O).

Each tip gets a Curve25519 keypair when it is accepted. The private key is kept
only inside a SecretBox whose key comes from the receipt code: the code's one
Argon2id (``ReceiptHasher.derive``, keyed by the installation secret) gives a
``seal_key`` that is never stored, and BLAKE2b mixes it with a random per-tip
salt and the installation's conversation key. So the relay's disk alone, or the
disk and the secret, open nothing without the code, and a guess costs that slow
hash. Officers' replies and the tipster's follow-ups are sealed to the public
key (SealedBox): the relay can write them but not read them back, and only
someone holding the receipt code can.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.secret import SecretBox

SALT_BYTES = 16


@dataclass(frozen=True)
class ConversationKeys:
    """What the relay stores for one tip: nothing here reads a reply without the code."""

    public_key: bytes
    sealed_private_key: bytes
    salt: bytes


@dataclass(frozen=True)
class Sealer:
    """Seals a tip's private key with the ``seal_key`` of its receipt code.

    No hash of its own: the receipt code's Argon2id is computed once per tip and
    per lookup (``ReceiptHasher.derive``), for the lookup hash and this key both.
    """

    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ValueError("the conversation key must be at least 16 bytes")

    def _box(self, seal_key: bytes, salt: bytes) -> SecretBox:
        return SecretBox(hashlib.blake2b(seal_key, digest_size=SecretBox.KEY_SIZE,
                                         key=self.key, salt=salt).digest())

    def new_keys(self, seal_key: bytes) -> ConversationKeys:
        """A fresh keypair for a tip, its private half sealed with *seal_key*."""
        private = PrivateKey.generate()
        salt = secrets.token_bytes(SALT_BYTES)
        sealed = bytes(self._box(seal_key, salt).encrypt(bytes(private)))
        return ConversationKeys(bytes(private.public_key), sealed, salt)

    def unlock(self, keys: ConversationKeys, seal_key: bytes) -> PrivateKey | None:
        """The tip's private key, or None when *seal_key* is not the one it was sealed with."""
        try:
            return PrivateKey(self._box(seal_key, keys.salt).decrypt(keys.sealed_private_key))
        except CryptoError:
            return None


def seal(public_key: bytes, text: str) -> bytes:
    """*text* sealed to a tip's public key: only its receipt code's holder reads it."""
    return bytes(SealedBox(PublicKey(public_key)).encrypt(text.encode("utf-8")))


def unseal(private_key: PrivateKey, sealed: bytes) -> str:
    """The text of :func:`seal`; CryptoError if it was not sealed to this key."""
    return bytes(SealedBox(private_key).decrypt(sealed)).decode("utf-8")
