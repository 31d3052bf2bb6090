"""Sealing a conversation between a station and a tipster (pure, no I/O).

Each tip gets a Curve25519 keypair when it is accepted. The private key is kept
only inside a SecretBox whose key Argon2id derives from the receipt code, with
a random per-tip salt and the installation's key as the salt's second half: so
the relay's disk alone, or the disk and the secret, open nothing without the
code, and a guess costs one slow hash. Officers' replies and the tipster's
follow-ups are sealed to the public key (SealedBox): the relay can write them
but not read them back, and only someone holding the receipt code can.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw
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
    """Argon2id from receipt code to the key that seals the tip's private key.

    The costs are ``ReceiptHasher``'s: whoever holds the database and the secret
    can already test a guess against the stored receipt hash at that price, so
    a dearer hash here would slow every tip and lookup and protect nothing more.
    Without the secret (the usual stolen disk) no guess can be tested at all.
    """

    key: bytes
    time_cost: int = 1
    memory_cost_kib: int = 8192
    parallelism: int = 1

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ValueError("the conversation key must be at least 16 bytes")

    def _box(self, code: str, salt: bytes) -> SecretBox:
        raw = hash_secret_raw(secret=code.encode("ascii"), salt=salt + self.key,
                              time_cost=self.time_cost, memory_cost=self.memory_cost_kib,
                              parallelism=self.parallelism, hash_len=SecretBox.KEY_SIZE,
                              type=Type.ID)
        return SecretBox(raw)

    def new_keys(self, code: str) -> ConversationKeys:
        """A fresh keypair for a tip, its private half sealed with *code*."""
        private = PrivateKey.generate()
        salt = secrets.token_bytes(SALT_BYTES)
        sealed = bytes(self._box(code, salt).encrypt(bytes(private)))
        return ConversationKeys(bytes(private.public_key), sealed, salt)

    def unlock(self, keys: ConversationKeys, code: str) -> PrivateKey | None:
        """The tip's private key, or None when *code* is not the one it was sealed with."""
        try:
            return PrivateKey(self._box(code, keys.salt).decrypt(keys.sealed_private_key))
        except CryptoError:
            return None


def seal(public_key: bytes, text: str) -> bytes:
    """*text* sealed to a tip's public key: only its receipt code's holder reads it."""
    return bytes(SealedBox(PublicKey(public_key)).encrypt(text.encode("utf-8")))


def unseal(private_key: PrivateKey, sealed: bytes) -> str:
    """The text of :func:`seal`; CryptoError if it was not sealed to this key."""
    return bytes(SealedBox(private_key).decrypt(sealed)).decode("utf-8")
