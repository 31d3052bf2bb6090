"""Photos and a voice message through the real ``mailbridge serve``, Postfix and Dovecot,
then indexed into a ledger: every marker gone, every file decodes, the hashes hold."""

from __future__ import annotations

import hashlib
import io
import mailbox
import re
import secrets
from pathlib import Path

import av
import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from mailbridge.core.message import RelayIdentity, signing_key
from mailbridge.station.ledger.models import Attachment, Tip
from mailbridge.station.poller.maildir import MaildirPoller
from tests import media_corpus as corpus
from tests.e2e.support import SECRET, smtp_relay
from tests.e2e.test_relay_e2e import _fetch_by_ref
from tests.servers.mailstack import MailStack
from tests.station.poller_helpers import Ledger

RELAY = RelayIdentity("tips@relay.example.test", (bytes(signing_key(SECRET).verify_key),))
TOKEN = re.compile(r'name=t value="([^"]+)"')
REF = re.compile(r"\b([A-Z0-9]{1,12}-\d{4,})\b")


@pytest.mark.servers
def test_photos_and_a_voice_message_reach_the_ledger_cleaned(
        tmp_path: Path, mailstack: MailStack) -> None:
    prefix = "M" + secrets.token_hex(3).upper()
    relay = smtp_relay(tmp_path / "relay", mailstack, prefix)
    voice = corpus.VOICES["mp4-video"]()  # a short video with a location atom and tags
    files = [("photo", ("IMG_0001.jpg", corpus.jpeg_with_markers(), "image/jpeg")),
             ("photo", ("IMG_0002.heic", corpus.heic_with_exif(), "image/heic")),
             ("photo", ("Screenshot.png", corpus.png_with_text(), "image/png")),
             ("voice", ("Recording MARKER.m4a", voice, "audio/mp4"))]
    try:
        with httpx.Client(base_url=relay.base, timeout=60) as client:
            token = TOKEN.search(client.get("/s/ncs/cho").text)
            assert token is not None
            reply = client.post("/s/ncs/cho", data={"t": token.group(1), "lang": "vi",
                                                    "category": "smuggling", "text": ""},
                                files=files)
        assert reply.status_code == 200, reply.text[:500]
        ref = REF.search(reply.text)
        assert ref is not None and ref.group(1).startswith(prefix)
        msg = _fetch_by_ref(mailstack, ref.group(1))
    finally:
        relay.stop()

    # Nothing of an original upload in any file the relay wrote (database, WAL, logs).
    for path in (tmp_path / "relay").rglob("*"):
        assert not path.is_file() or b"MARKER" not in path.read_bytes(), path
    raw = msg.as_bytes()
    for trace in (b"MARKER", b"IMG_000", b"Screenshot", b"Recording", b"loci", b"Exif"):
        assert trace not in raw, trace
    parts = {p.get_filename() or "": p.get_content() for p in msg.iter_attachments()}
    assert list(parts) == ["anh-1.jpg", "anh-2.jpg", "anh-3.jpg", "ghi-am-1.m4a"]
    plain = msg.get_body(("plain",))
    assert plain is not None
    for name, data in parts.items():
        assert isinstance(data, bytes)
        assert f"{name}  {hashlib.sha256(data).hexdigest()}" in plain.get_content()
        if name.endswith(".jpg"):
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                assert image.format == "JPEG" and not image.getexif()
    audio = parts["ghi-am-1.m4a"]
    assert isinstance(audio, bytes)
    assert corpus.duration(audio) == pytest.approx(corpus.duration(voice), abs=0.1)
    with av.open(io.BytesIO(audio), mode="r") as box:
        assert not box.streams.video and box.streams.audio[0].codec_context.name == "aac"

    # The station side: the delivered message indexed, its files stored and verified.
    maildir = mailbox.Maildir(tmp_path / "station", create=True)
    maildir.add(raw)
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db", tmp_path / "attachments",
                    RELAY.address)
    try:
        MaildirPoller(tmp_path / "station", ledger.store, relay=RELAY,
                      max_message_bytes=25 * 1024 * 1024).poll()
        with ledger.sessions() as s:
            tip = s.scalars(select(Tip).where(Tip.ref == ref.group(1))).one()
            stored = s.scalars(select(Attachment).where(
                Attachment.message_pk == tip.message_pk).order_by(Attachment.id)).all()
            assert [a.filename for a in stored] == list(parts)
            for a in stored:
                data = (tmp_path / "attachments" / a.stored_path).read_bytes()
                assert data == parts[a.filename]
                assert a.sha256 == hashlib.sha256(data).hexdigest()
    finally:
        ledger.close()
