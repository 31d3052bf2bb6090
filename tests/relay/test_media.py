"""Cleaning photos and voice messages: the self-made corpus through the real workers."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

import av
import pytest
from PIL import Image

from mailbridge.core.message import Attachment
from mailbridge.errors import MediaRefused
from mailbridge.relay import media
from mailbridge.relay.media import MediaCleaner, MediaLimits, sniff
from tests import media_corpus as corpus

LIMITS = MediaLimits()


def clean(photos: list[bytes], voice: bytes | None = None,
          limits: MediaLimits = LIMITS) -> tuple[Attachment, ...]:
    return asyncio.run(MediaCleaner(limits).clean(photos, voice))


def refusal(photos: list[bytes], voice: bytes | None = None,
            limits: MediaLimits = LIMITS) -> tuple[str, int, str]:
    with pytest.raises(MediaRefused) as refused:
        clean(photos, voice, limits)
    return refused.value.field, refused.value.number, refused.value.reason


def no_trace(data: bytes) -> None:
    for trace in (corpus.MARKER, b"Exif", b"xmpmeta", b"PK\x03\x04", b"\xa9xyz", b"loci", b"Lavf",
                  b"ICC_PROFILE", b"tEXt", b"iTXt"):
        assert trace not in data, trace


@pytest.mark.parametrize("name", sorted(corpus.PHOTOS))
def test_every_photo_comes_out_a_new_jpeg_without_a_trace(name: str) -> None:
    original = corpus.PHOTOS[name]()
    (cleaned,) = clean([original])
    assert (cleaned.filename, cleaned.content_type) == ("anh-1.jpg", "image/jpeg")
    no_trace(cleaned.data)
    with Image.open(io.BytesIO(cleaned.data)) as image:
        assert image.format == "JPEG" and not image.getexif() and "icc_profile" not in image.info
        image.load()
        if name == "jpeg":  # orientation 6 applied: the 1600×1200 picture stands upright
            assert image.size == (1200, 1600)


def test_the_long_side_is_capped_and_the_pixels_are_the_photo() -> None:
    original = corpus.jpeg_with_markers(3000, 2000)
    (cleaned,) = clean([original], limits=MediaLimits(photo_max_px=600))
    with Image.open(io.BytesIO(cleaned.data)) as image:
        assert image.size == (400, 600)
        # the top-left corner of the turned picture is the original's bottom-left
        with Image.open(io.BytesIO(original)) as before:
            expected = before.convert("RGB").getpixel((5, before.height - 6))
        got = image.convert("RGB").getpixel((2, 2))
        assert isinstance(expected, tuple) and isinstance(got, tuple)
        assert max(abs(a - b) for a, b in zip(expected, got, strict=True)) < 40


@pytest.mark.parametrize("name", sorted(corpus.VOICES))
def test_every_voice_comes_out_a_new_m4a_of_the_same_length(name: str) -> None:
    (cleaned,) = clean([], corpus.VOICES[name]())
    assert (cleaned.filename, cleaned.content_type) == ("ghi-am-1.m4a", "audio/mp4")
    no_trace(cleaned.data)
    with av.open(io.BytesIO(cleaned.data)) as box:
        assert box.streams.audio[0].codec_context.name == "aac"
        assert not box.streams.video
        assert {k for k in box.metadata if k not in ("major_brand", "minor_version",
                                                     "compatible_brands")} == set()
    assert corpus.duration(cleaned.data) == pytest.approx(3.0, abs=0.1)


def test_the_original_tags_were_there_to_remove() -> None:
    """The corpus really carries what the cleaning must remove."""
    assert b"loci" in corpus.VOICES["m4a"]() and b"\xa9xyz" in corpus.VOICES["mov-video"]()
    assert b"MARKER-GPS" in corpus.jpeg_with_markers() and b"tEXt" in corpus.png_with_text()


def test_a_long_voice_message_is_cut_at_voice_max_seconds() -> None:
    long = corpus.audio("ipod", "aac", seconds=5.0)
    (cleaned,) = clean([], long, MediaLimits(voice_max_seconds=2))
    assert corpus.duration(cleaned.data) == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize(("photos", "voice", "expected"), [
    ([b""], None, ("photo", 1, "empty")),
    ([corpus.png_with_text(), corpus.zip_as_jpeg()], None, ("photo", 2, "wrong_type")),
    ([corpus.VOICES["m4a"]()], None, ("photo", 1, "wrong_type")),
    ([], corpus.jpeg_with_markers(64, 64), ("voice", 1, "wrong_type")),
    ([corpus.png_bomb()], None, ("photo", 1, "unreadable")),
    ([corpus.truncated_jpeg()], None, ("photo", 1, "unreadable")),
    ([], b"OggS" + b"\0" * 4000, ("voice", 1, "unreadable")),
    ([], corpus.VOICES["m4a"]()[:300], ("voice", 1, "unreadable")),
])
def test_what_cannot_be_cleaned_is_refused_by_position_and_reason(
        photos: list[bytes], voice: bytes | None, expected: tuple[str, int, str]) -> None:
    assert refusal(photos, voice) == expected


def test_size_memory_and_time_limits_refuse_the_file() -> None:
    photo = corpus.jpeg_with_markers(1600, 1200)
    assert refusal([photo], limits=MediaLimits(photo_max_bytes=len(photo) - 1)) == (
        "photo", 1, "too_big")
    assert refusal([photo], limits=MediaLimits(worker_memory_bytes=1 << 20))[2] == "unreadable"
    assert refusal([photo], limits=MediaLimits(worker_seconds=0.001))[2] == "unreadable"
    assert refusal([photo], limits=MediaLimits(max_pixels=1600 * 1200 - 1))[2] == "unreadable"


def test_sniffing_trusts_the_bytes_only() -> None:
    assert sniff(corpus.jpeg_zip_polyglot()) == ("photo", "JPEG")
    assert sniff(corpus.heic_with_exif()) == ("photo", "HEIF")
    assert sniff(corpus.VOICES["3gp-amr"]()) == ("voice", "mov")
    assert sniff(corpus.zip_as_jpeg()) is None
    assert sniff(b"GIF89a") is None and sniff(b"") is None


def test_the_worker_is_locked_down_before_it_reads_a_byte() -> None:
    """No new privileges, no file or socket it could open, nothing of the relay's
    environment (its secret)."""
    probe = (
        "import os, socket\n"
        "from mailbridge.relay.mediaworker import lock_down\n"
        "oom = open('/proc/self/oom_score_adj')\n"  # opened before: no file can be after
        "lock_down(256 << 20, 5)\n"
        "try:\n    socket.socket()\n    print('socket')\nexcept OSError:\n    pass\n"
        "try:\n    os.open('/etc/hostname', os.O_RDONLY)\n    print('file')\nexcept OSError:\n"
        "    pass\n"
        "print(sorted(os.environ))\n"
        "print(oom.read().strip())\n")
    check = "import ctypes\nprint(ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))\n"  # GET_NO_NEW_PRIVS
    done = subprocess.run([*media.WORKER[:-2], "-c", probe + check], env=media.WORKER_ENV,
                          capture_output=True, text=True, check=True, timeout=60)
    # its environment, the OOM killer's first choice, no new privileges
    assert done.stdout.split("\n")[:3] == [str(sorted(media.WORKER_ENV)), "1000", "1"]


def test_no_file_is_written_and_the_loop_keeps_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The uploads never touch the disk (a temp folder and the working folder stay
    empty), and the event loop serves other work while files are being cleaned."""
    temp, relay = tmp_path / "tmp", tmp_path / "relay"
    temp.mkdir()
    relay.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(media, "WORKER_ENV", {**media.WORKER_ENV, "TMPDIR": str(temp)})
    monkeypatch.chdir(relay)
    ticks = 0

    async def run() -> tuple[Attachment, ...]:
        nonlocal ticks
        task = asyncio.create_task(MediaCleaner(LIMITS).clean(
            [corpus.jpeg_with_markers(), corpus.png_with_text()], corpus.VOICES["wav"]()))
        while not task.done():
            ticks += 1
            await asyncio.sleep(0)
        return task.result()

    assert len(asyncio.run(run())) == 3
    assert ticks > 100
    assert list(temp.iterdir()) == [] and list(relay.iterdir()) == []


def test_the_worker_is_this_python_and_this_module_only() -> None:
    assert (sys.executable, "-I", "-B", "-m", "mailbridge.relay.mediaworker") == media.WORKER


def test_check_proves_the_workers_clean_here_and_only_warns_when_they_cannot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mailbridge check`` (the relay unit's ExecStartPre) cleans a test photo and sound;
    a relay whose workers cannot run still starts, for text tips, with a warning."""
    from mailbridge.checks import run_check
    from tests.relay.test_web import make_settings

    settings = make_settings(tmp_path)
    out = io.StringIO()
    assert run_check(settings, out=out) == 0
    assert "media: photos and voice messages are cleaned\n" in out.getvalue()
    monkeypatch.setattr(media, "WORKER", ("/bin/false",))
    out = io.StringIO()
    assert run_check(settings, out=out) == 0
    assert "media: WARNING a test photo could not be cleaned (unreadable)" in out.getvalue()
