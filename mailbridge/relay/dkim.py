"""DKIM: the relay signs what it sends as its own domain.

Gmail, Microsoft 365 and Zimbra file unauthenticated mail as spam or refuse it, and a
tip in a spam folder is a tip nobody reads. So every message leaves DKIM-signed
(dkimpy, RSA-2048 with rsa-sha256: Microsoft 365 checks no ed25519 signature),
relaxed/relaxed so a server that refolds headers or trailing spaces keeps it valid.

Signed at delivery, not at accept: the signature's ``t=`` is the moment of sending,
the minute ``Date:`` and the servers' ``Received:`` lines already show, never the
moment of submission. A redelivery signs again; the message's bytes, and so its
contract signature (``core/message.py``) and Message-ID, stay the same. DKIM is what
the providers check; the contract is what the station side checks, and it survives
the banners and link wrapping that break DKIM.

The key is one PEM file per relay domain and selector, 0600, written by
``mailbridge dkim-key``, which prints the DNS TXT record to publish.

dkimpy builds, canonicalises and hashes; its RSA step is pure Python (``pow`` on
1024-bit halves): about 15 ms of CPU per message on this box, all of it holding the
GIL, so the web form's loop stood still meanwhile. ``_openssl_rsa_sign`` takes its
place: the same scheme (RSASSA-PKCS1-v1_5 is deterministic, so the same bytes,
``tests/relay/test_dkim.py`` compares them) from OpenSSL through ``cryptography``, 0.6 ms.
"""

from __future__ import annotations

import base64
import os
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import dkim.dnsplug
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ..config import DNS_LABEL, Settings
from ..errors import ConfigError
from ..fsmodes import open_private

KEY_BITS = 2048
CANONICALIZE = (b"relaxed", b"relaxed")
_OPENSSL_KEYS: dict[int, rsa.RSAPrivateKey] = {}  # by modulus: one per key file


def _openssl_rsa_sign(digest: Any, pk: Mapping[str, int]) -> bytes:
    """``dkim.crypto.RSASSA_PKCS1_v1_5_sign(digest, pk)``, computed by OpenSSL."""
    if digest.name.lower() != "sha256":
        raise ValueError(f"only rsa-sha256 is signed here, not {digest.name}")
    key = _OPENSSL_KEYS.get(pk["modulus"])
    if key is None:
        public = rsa.RSAPublicNumbers(pk["publicExponent"], pk["modulus"])
        key = rsa.RSAPrivateNumbers(pk["prime1"], pk["prime2"], pk["privateExponent"],
                                    pk["exponent1"], pk["exponent2"], pk["coefficient"],
                                    public).private_key()
        _OPENSSL_KEYS[pk["modulus"]] = key
    return key.sign(digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))


dkim.RSASSA_PKCS1_v1_5_sign = _openssl_rsa_sign  # what DKIM.gen_header calls to sign


@dataclass(frozen=True)
class DkimSigner:
    """Signs a message as ``domain`` with the key published at ``selector``."""

    domain: str
    selector: str
    key_pem: bytes

    def sign(self, message: bytes) -> bytes:
        """``message`` with a DKIM-Signature header in front (CRLF lines)."""
        header: bytes = dkim.sign(message, self.selector.encode("ascii"),
                                  self.domain.encode("ascii"), self.key_pem,
                                  canonicalize=CANONICALIZE)
        return header + message

    def txt_value(self) -> str:
        """What the TXT record at ``dns_name`` holds: the public key."""
        return txt_value(self.key_pem)

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def record_problem(published: bytes | None, signer: DkimSigner) -> str | None:
    """What is wrong with the TXT record found at ``signer.dns_name``, or None when it
    publishes the signer's key."""
    if published is None:
        return (f"no TXT record at {signer.dns_name}: publish the one `mailbridge dkim-key` "
                f"prints")
    text = published.decode("ascii", "replace")
    tags = {k.strip(): v.strip() for k, _, v in (t.partition("=") for t in text.split(";"))}
    wanted = signer.txt_value().rpartition("p=")[2]
    if "".join(tags.get("p", "").split()) != wanted:
        return (f"the TXT record at {signer.dns_name} holds another key: publish the one "
                f"`mailbridge dkim-key` prints (or wait for the old one to expire)")
    return None


def check_record(signer: DkimSigner) -> str | None:
    """``record_problem`` of what DNS answers now (``check --connect``)."""
    try:
        published = dkim.dnsplug.get_txt(signer.dns_name.encode("ascii"), timeout=5)
    except dkim.DnsTimeoutError as exc:
        return f"DNS did not answer for {signer.dns_name} ({exc}): check the resolver"
    return record_problem(published, signer)


def generate_key() -> bytes:
    """A new RSA key, PEM (PKCS#1, the form dkimpy reads)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def txt_value(key_pem: bytes) -> str:
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA key")
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def zone_line(signer: DkimSigner) -> str:
    """The record as a zone-file line; a TXT string holds at most 255 bytes, so the
    value is split into several quoted strings, which resolvers join."""
    parts = " ".join(f'"{part}"' for part in textwrap.wrap(signer.txt_value(), 250,
                                                          break_on_hyphens=False))
    return f"{signer.dns_name}. 3600 IN TXT ( {parts} )"


def key_path(settings: Settings, selector: str | None = None) -> Path:
    """``relay.dkim_key`` for the configured selector, else ``dkim-SELECTOR.key``
    beside the config file."""
    relay = settings.relay
    if relay.dkim_key is not None and selector in (None, relay.dkim_selector):
        return relay.dkim_key
    return settings.path.parent / f"dkim-{selector or relay.dkim_selector}.key"


def load_signer(settings: Settings) -> DkimSigner | None:
    """The signer for ``relay.domain``, or None when no key file exists yet and none
    was configured (the relay then warns that its mail goes unsigned)."""
    relay = settings.relay
    path = key_path(settings)
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        if relay.dkim_key is None:
            return None
        raise ConfigError(f"relay.dkim_key: {path} does not exist: create it with "
                          f"`mailbridge dkim-key` or remove the key ({settings.path})") from None
    except OSError as exc:
        raise ConfigError(f"relay.dkim_key: {path} cannot be read ({exc.strerror}): it must "
                          f"belong to the relay's user, mode 0600 ({settings.path})") from exc
    signer = DkimSigner(relay.domain, relay.dkim_selector, pem)
    try:
        signer.txt_value()
    except ValueError as exc:
        raise ConfigError(f"relay.dkim_key: {path} is not an RSA private key in PEM: move "
                          f"it away and run `mailbridge dkim-key` ({settings.path})") from exc
    return signer


def run_dkim_key(settings: Settings, selector: str | None) -> int:
    """``mailbridge dkim-key``: write the key if it is missing (never over an existing
    one), then print the TXT record and, for a new selector, the config line."""
    relay = settings.relay
    selector = selector or relay.dkim_selector
    if not DNS_LABEL.match(selector):
        raise ConfigError(f"--selector {selector!r} must be one DNS label (letters, digits, "
                          f"-), such as mb2027")
    path = key_path(settings, selector)
    if path.exists():
        print(f"{path} exists: kept. Its record:")
    else:
        fd = open_private(path, os.O_WRONLY | os.O_EXCL)
        with os.fdopen(fd, "wb") as out:
            out.write(generate_key())
        print(f"{path} written (0600). Publish this record in {relay.domain}'s DNS:")
    signer = DkimSigner(relay.domain, selector, path.read_bytes())
    print(zone_line(signer))
    print(f"name: {signer.dns_name}  type: TXT  value: {signer.txt_value()}")
    if selector != relay.dkim_selector:
        print(f"Once the record resolves, set in [relay]: dkim_selector = \"{selector}\""
              f" and dkim_key = \"{path}\" ({settings.path})")
    return 0
