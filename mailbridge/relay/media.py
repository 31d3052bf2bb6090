"""Photos and voice messages: every file cleaned, or refused, before a tip is built.

Phones write GPS, device, owner and times into their files, and one such tag can
expose a tipster, so nothing of an upload is forwarded as it came. Its type is
sniffed from its bytes (the client's name and type are never read); it is decoded
in a sandboxed worker process (``mediaworker.py``: nothing secret, limits, no new
privileges), which hands back raw pixels or samples only; the relay then builds a
new JPEG or M4A from them (Dangerzone's idea), which can hold no metadata because
none was passed on. A crash, a timeout or a limit refuses that file alone, with a
reason the form says in the tipster's language.

No upload touches the disk: the bytes go from the request to the worker's stdin
and come back on its stdout. The hash of an original is never computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from PIL import Image

from ..core.message import Attachment, photo, voice
from ..errors import MediaRefused

PHOTO, VOICE = "photo", "voice"
MB = 1024 * 1024
# ISO base media brands of HEIF stills; any other ``ftyp`` is an audio/video container.
HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm",
                         b"hevs", b"mif1", b"msf1"})
SAMPLE_RATE = 24_000  # mono voice: every mail client plays 24 kHz AAC
VOICE_BIT_RATE = 32_000
JPEG_QUALITY = 82
# Only the worker, no argument the client chooses; an environment with nothing in it.
WORKER = (sys.executable, "-I", "-B", "-m", "mailbridge.relay.mediaworker")
WORKER_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class MediaLimits:
    """What one tip may carry and what one cleaning may cost."""

    max_photos: int = 3
    photo_max_px: int = 2048
    voice_max_seconds: int = 180
    photo_max_bytes: int = 15 * MB
    voice_max_bytes: int = 20 * MB
    max_pixels: int = 64_000_000  # a decoded bitmap beyond this is a bomb, never decoded
    worker_memory_bytes: int = 512 * MB
    worker_cpu_seconds: int = 20
    worker_seconds: float = 30.0  # wall clock, for a worker stuck without burning CPU
    workers: int = 2  # at once, for the whole relay (cleaning is niced, tips keep going)

    @property
    def max_upload_bytes(self) -> int:
        """Every file of one tip together, before the text fields."""
        return self.max_photos * self.photo_max_bytes + self.voice_max_bytes


def sniff(data: bytes) -> tuple[str, str] | None:
    """``(field, decoder)`` from the file's first bytes, or None: a photo's Pillow
    format, a voice's FFmpeg demuxer. The only decoder the worker will try."""
    head = data[:16]
    brand = head[8:12]
    if head.startswith(b"\xff\xd8\xff"):
        return PHOTO, "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PHOTO, "PNG"
    if head.startswith(b"RIFF") and brand in (b"WEBP", b"WAVE"):
        return (PHOTO, "WEBP") if brand == b"WEBP" else (VOICE, "wav")
    if head[4:8] == b"ftyp":
        return (PHOTO, "HEIF") if brand in HEIF_BRANDS else (VOICE, "mov")
    for magic, demuxer in ((b"OggS", "ogg"), (b"\x1a\x45\xdf\xa3", "matroska"),
                           (b"#!AMR", "amr"), (b"ID3", "mp3")):
        if head.startswith(magic):
            return VOICE, demuxer
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return VOICE, "mp3"  # an MPEG audio frame without an ID3 tag
    return None


def jpeg_from_pixels(raw: bytes, max_px: int) -> bytes:
    """A new JPEG from the worker's pixels (checked first: the worker is not trusted)."""
    width, height = struct.unpack(">II", raw[:8])
    if not (0 < width <= max_px and 0 < height <= max_px and len(raw) == 8 + width * height * 3):
        raise ValueError("the worker's pixels do not add up")
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), raw[8:]).save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def m4a_from_samples(pcm: bytes, rate: int = SAMPLE_RATE) -> bytes:
    """A new M4A (AAC, mono) from 16-bit samples; ``bitexact`` keeps even the encoder's
    name out, so the file carries no tag at all."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
    if not samples.size:
        raise ValueError("no sound")
    out = io.BytesIO()
    with av.open(out, mode="w", format="ipod", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        stream.bit_rate = VOICE_BIT_RATE
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        for start in range(0, samples.size, 8192):
            frame = av.AudioFrame.from_ndarray(samples[start:start + 8192].reshape(1, -1),
                                               format="s16", layout="mono")
            frame.rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


class MediaCleaner:
    """Cleans one tip's files; shares a few worker slots across the whole relay."""

    def __init__(self, limits: MediaLimits) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.workers)

    async def clean(self, photos: Sequence[bytes], voice_data: bytes | None
                    ) -> tuple[Attachment, ...]:
        """The cleaned files in order (photos, then the voice message), or
        ``MediaRefused`` for the first that cannot be cleaned."""
        cleaned = [photo(n, await self._photo(n, data)) for n, data in enumerate(photos, 1)]
        if voice_data is not None:
            cleaned.append(voice(1, await self._voice(voice_data)))
        return tuple(cleaned)

    def _checked(self, field: str, number: int, data: bytes, max_bytes: int) -> str:
        if not data:
            raise MediaRefused(field, number, "empty")
        if len(data) > max_bytes:
            raise MediaRefused(field, number, "too_big")
        found = sniff(data)
        if found is None or found[0] != field:
            raise MediaRefused(field, number, "wrong_type")
        return found[1]

    async def _photo(self, number: int, data: bytes) -> bytes:
        lim = self.limits
        fmt = self._checked(PHOTO, number, data, lim.photo_max_bytes)
        raw = await self._decode({"kind": PHOTO, "format": fmt, "max_px": lim.photo_max_px,
                                  "max_pixels": lim.max_pixels, "max_bytes": lim.photo_max_bytes},
                                 data, 8 + lim.photo_max_px ** 2 * 3)
        try:
            if raw is None:
                raise ValueError("the worker refused it")
            return await asyncio.to_thread(jpeg_from_pixels, raw, lim.photo_max_px)
        except ValueError:
            raise MediaRefused(PHOTO, number, "unreadable") from None

    async def _voice(self, data: bytes) -> bytes:
        lim = self.limits
        fmt = self._checked(VOICE, 1, data, lim.voice_max_bytes)
        raw = await self._decode({"kind": VOICE, "format": fmt, "rate": SAMPLE_RATE,
                                  "max_seconds": lim.voice_max_seconds,
                                  "max_bytes": lim.voice_max_bytes},
                                 data, SAMPLE_RATE * 2 * lim.voice_max_seconds)
        try:
            if raw is None:
                raise ValueError("the worker refused it")
            return await asyncio.to_thread(m4a_from_samples, raw)
        except (ValueError, av.FFmpegError):
            raise MediaRefused(VOICE, 1, "unreadable") from None

    async def _decode(self, request: dict[str, Any], data: bytes, max_out: int) -> bytes | None:
        """The worker's answer, or None for a crash, a limit, a timeout or too much output."""
        request |= {"memory_bytes": self.limits.worker_memory_bytes,
                    "cpu_seconds": self.limits.worker_cpu_seconds}
        async with self._slots:
            proc = await asyncio.create_subprocess_exec(
                *WORKER, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, env=WORKER_ENV, cwd="/",
                start_new_session=True)
            try:
                out = await asyncio.wait_for(self._exchange(proc, request, data, max_out),
                                             self.limits.worker_seconds)
            except (TimeoutError, OSError):
                out = None
            finally:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                await proc.wait()
            return out if proc.returncode == 0 else None

    @staticmethod
    async def _exchange(proc: asyncio.subprocess.Process, request: dict[str, Any],
                        data: bytes, max_out: int) -> bytes | None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(json.dumps(request).encode("ascii") + b"\n" + data)
        await proc.stdin.drain()
        proc.stdin.close()
        out = bytearray()
        while chunk := await proc.stdout.read(1 << 20):
            out += chunk
            if len(out) > max_out:
                return None
        await proc.wait()
        return bytes(out)
