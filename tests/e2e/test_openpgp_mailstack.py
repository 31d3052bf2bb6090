"""OpenPGP to the station, through the real ``mailbridge serve``, Postfix and Dovecot,
with keys the test made: a form tip with a photo arrives as PGP/MIME, readable by
``gpg --decrypt``, signed as ever, and indexed by the poller from its plaintext; one it
cannot decrypt is quarantined with the reason."""

from __future__ import annotations

import email
import io
import mailbox
import re
import secrets
import shutil
import subprocess
from email.message import Message
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from mailbridge.core.message import (
    RelayIdentity,
    body_digest,
    ciphertext,
    signing_key,
    verify_contract,
)
from mailbridge.openpgp import Decryptor
from mailbridge.station.ledger.models import Attachment, Quarantine, Tip
from mailbridge.station.poller.maildir import MaildirPoller
from tests import media_corpus as corpus
from tests.e2e.support import SECRET, RelayProcess, free_port, smtp_station, write_config
from tests.e2e.test_relay_e2e import _fetch_by_ref
from tests.openpgp_keys import PASSPHRASE, StationKeys
from tests.servers.mailstack import MailStack
from tests.station.poller_helpers import Ledger

RELAY = RelayIdentity("tips@relay.example.test", (bytes(signing_key(SECRET).verify_key),))
TOKEN = re.compile(r'name=t value="([^"]+)"')
REF = re.compile(r"\b([A-Z0-9]{1,12}-\d{4,})\b")
MARKER = "MARKER-PGP-" + secrets.token_hex(4).upper()


def _encrypted_relay(folder: Path, stack: MailStack, prefix: str,
                     keys: StationKeys) -> RelayProcess:
    """``smtp_relay`` with the station's public key in the config folder."""
    (folder / "keys").mkdir(parents=True)
    shutil.copy(keys.public, folder / "keys" / "ncs.asc")
    station = smtp_station(stack, prefix).replace(
        "[stations.smtp]", 'openpgp_key = "keys/ncs.asc"\n[stations.smtp]')
    port = free_port()
    config = write_config(folder, port, station)
    with (folder / ".env").open("a") as env:
        env.write("STATION_SMTP_PASSWORD=secret\n")
    return RelayProcess(config, port).start()


def _outside_armour(data: bytes) -> bytes:
    """A stored mail without its armoured ciphertext: what a reader of the mailbox sees
    in clear. The armour itself is base64, where any four letters turn up by chance
    ("JFIF" in about one photo tip in fifty), so clear text is looked for outside it."""
    return re.sub(rb"-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----", b"", data,
                  flags=re.S)


def _headers(msg: Message) -> dict[str, list[str]]:
    lists: dict[str, list[str]] = {}
    for name, value in msg.items():
        lists.setdefault(name.lower(), []).append(str(value))
    return lists


def _index(tmp: Path, raw: bytes, decrypt: Decryptor | None) -> Ledger:
    tmp.mkdir()
    maildir = mailbox.Maildir(tmp / "station", create=True)
    maildir.add(raw)
    ledger = Ledger(f"sqlite:///{tmp}/ledger.db", tmp / "attachments", RELAY.address)
    MaildirPoller(tmp / "station", ledger.store, relay=RELAY,
                  max_message_bytes=25 * 1024 * 1024, decrypt=decrypt).poll()
    return ledger


@pytest.mark.servers
def test_a_tip_with_a_photo_reaches_the_station_encrypted(
        tmp_path: Path, mailstack: MailStack, station_keys: StationKeys) -> None:
    prefix = "P" + secrets.token_hex(3).upper()
    relay = _encrypted_relay(tmp_path / "relay", mailstack, prefix, station_keys)
    try:
        with httpx.Client(base_url=relay.base, timeout=60) as client:
            token = TOKEN.search(client.get("/s/ncs/cho").text)
            assert token is not None
            reply = client.post("/s/ncs/cho", data={
                "t": token.group(1), "lang": "vi", "category": "smuggling",
                "text": f"Xe tải chở hàng lậu qua bản {MARKER}", "where": "Bản Nậm Cha"},
                files=[("photo", ("IMG_0001.jpg", corpus.jpeg_with_markers(), "image/jpeg"))])
        assert reply.status_code == 200, reply.text[:500]
        found = REF.search(reply.text)
        assert found is not None and found.group(1).startswith(prefix)
        ref = found.group(1)
        delivered = _fetch_by_ref(mailstack, ref)
    finally:
        relay.stop()

    # Neither the relay's files (database, WAL, logs) nor Dovecot's copy hold the tip.
    for path in (tmp_path / "relay").rglob("*"):
        assert not path.is_file() or MARKER.encode() not in path.read_bytes(), path
    stored = [p for p in mailstack.maildir("station1@example.test").rglob("*")
              if p.is_file() and ref.encode() in p.read_bytes()]
    assert stored
    for path in stored:
        data = path.read_bytes()
        outside = _outside_armour(data)
        if path.parent.name in ("new", "cur"):
            assert [part.get_content_type() for part in email.message_from_bytes(data).walk()
                    ] == ["multipart/encrypted", "application/pgp-encrypted",
                          "application/octet-stream"], path
            assert len(outside) < 8192, path
        for clear in (MARKER, "Xe tải", "Bản Nậm Cha", "JFIF", "anh-1.jpg", "image/jpeg"):
            assert clear.encode() not in outside, (clear, path)
    raw = delivered.as_bytes()
    outer = email.message_from_bytes(raw)
    assert outer["Subject"] == f"[{ref}]"
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer.get_param("protocol") == "application/pgp-encrypted"

    # The contract, outside, still verifies: over the ciphertext the station received.
    checked = verify_contract(_headers(outer), body_digest(outer), RELAY.public_keys)
    assert checked.problem == "" and checked.contract is not None
    assert checked.contract.ref == ref

    # gpg --decrypt, as an officer's mail client would, gives the original MIME tip.
    armour = ciphertext(outer)
    assert armour is not None
    plain = subprocess.run(
        ["gpg", "--homedir", str(station_keys.home), "--batch", "--pinentry-mode", "loopback",
         "--passphrase", PASSPHRASE, "--decrypt"], input=armour, capture_output=True,
        check=True).stdout
    inner = email.message_from_bytes(plain, policy=email.policy.default)
    assert inner.get_param("protected-headers") == "v1"
    assert str(inner["Subject"]).startswith(f"[{ref}] ")
    assert inner["Message-ID"] == outer["Message-ID"]
    body = inner.get_body(("plain",))
    assert body is not None and MARKER in body.get_content()
    photos = [p for p in inner.iter_attachments() if p.get_filename() == "anh-1.jpg"]
    assert len(photos) == 1
    with Image.open(io.BytesIO(photos[0].get_content())) as image:
        image.load()
        assert image.format == "JPEG"

    # The poller decrypts with the station's key file and indexes the tip's words.
    decrypt = Decryptor(secret_key=station_keys.secret, passphrase=PASSPHRASE)
    ledger = _index(tmp_path / "good", raw, decrypt)
    try:
        with ledger.sessions() as s:
            tip = s.scalars(select(Tip).where(Tip.ref == ref)).one()
            assert MARKER in tip.preview
            files = s.scalars(select(Attachment).where(
                Attachment.message_pk == tip.message_pk)).all()
            assert [a.filename for a in files] == ["anh-1.jpg"]
            assert s.scalars(select(Quarantine)).all() == []
    finally:
        ledger.close()

    # Another station's key, or none at all: quarantined, with the reason.
    for name, decryptor, reason in (
            ("wrong", Decryptor(secret_key=station_keys.other_secret),
             "encrypted, and it could not be decrypted: it is encrypted to a key whose "
             "private part this station does not have"),
            ("none", None, "this station cannot decrypt: set openpgp_secret_key")):
        ledger = _index(tmp_path / name, raw, decryptor)
        try:
            with ledger.sessions() as s:
                assert s.scalars(select(Tip)).all() == []
                kept = s.scalars(select(Quarantine)).one()
                assert reason in kept.reason and kept.raw == raw
        finally:
            ledger.close()
