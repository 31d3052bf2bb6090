"""The sandboxed decoder: ``python -m mailbridge.relay.mediaworker``, one process per file.

Pillow's and FFmpeg's decoders are the relay's largest attack surface, so hostile
bytes are only ever decoded here: in a fresh process started with an empty
environment (no secret, no database handle, no socket inherited), which loads its
decoders and then, before it reads a byte of the file, takes away what an exploit
would want: new privileges (``PR_SET_NO_NEW_PRIVS``), memory and CPU time beyond
its limits, any file it could write (``RLIMIT_FSIZE`` 0) and any new descriptor
(``RLIMIT_NOFILE`` 3: no file, no socket, no pipe). It writes back only raw data:
RGB pixels of a photo, or 16-bit mono PCM of a voice message. The relay builds the
JPEG or the M4A from those itself (``media.py``), so nothing of the original file,
its metadata included, can survive.

Request on stdin: one JSON line (``kind``, ``format``, limits), then the file's
bytes. Answer on stdout, exit status 0: a photo is ``>II`` width and height, then
the pixels; a voice message is its samples. Any other exit is a refusal.
"""

from __future__ import annotations

import ctypes
import importlib
import io
import json
import os
import pkgutil
import resource
import struct
import sys
import warnings
from typing import Any, BinaryIO

PR_SET_NO_NEW_PRIVS = 38


def lock_down(memory_bytes: int, cpu_seconds: int) -> None:
    """Limits that hold for the rest of this process; raising them back is refused.
    Under the relay unit's MemoryMax the kernel's OOM killer takes a worker, not the relay."""
    with open("/proc/self/oom_score_adj", "w", encoding="ascii") as oom:
        oom.write("1000")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    with open("/proc/self/statm", encoding="ascii") as statm:  # pages mapped by now
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    for limit, value in ((resource.RLIMIT_AS, mapped + memory_bytes),
                         (resource.RLIMIT_CPU, cpu_seconds), (resource.RLIMIT_FSIZE, 0),
                         (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, 3)):
        resource.setrlimit(limit, (value, value))


def photo_pixels(data: bytes, fmt: str, max_px: int, max_pixels: int) -> tuple[int, int, bytes]:
    """The photo upright (EXIF orientation applied), its long side at most *max_px*,
    as RGB pixels; transparency is laid on white. Only *fmt*'s decoder is tried."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data), formats=[fmt]) as opened:
        width, height = opened.size
        if width * height > max_pixels:
            raise ValueError("too many pixels")
        opened.draft("RGB", (max_px, max_px))  # JPEG decodes at 1/2, 1/4 or 1/8 size
        image = ImageOps.exif_transpose(opened)
        image.thumbnail((max_px, max_px))
        if image.mode in ("RGBA", "LA", "PA", "P"):
            image = image.convert("RGBA")
            flat = Image.new("RGB", image.size, "white")
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        rgb = image.convert("RGB")
        return rgb.width, rgb.height, rgb.tobytes()


def voice_samples(data: bytes, fmt: str, rate: int, max_seconds: int, out: BinaryIO) -> None:
    """The first audio stream as 16-bit mono PCM at *rate*, cut at *max_seconds*."""
    import av

    left = rate * max_seconds
    with av.open(io.BytesIO(data), mode="r", format=fmt) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for frame in container.decode(stream):
            for chunk in resampler.resample(frame):
                pcm = bytes(chunk.planes[0])[: chunk.samples * 2][: left * 2]
                out.write(pcm)
                left -= len(pcm) // 2
            if left <= 0:
                return
        for chunk in resampler.resample(None):
            out.write(bytes(chunk.planes[0])[: chunk.samples * 2][: left * 2])
            left -= chunk.samples


def _load_decoders() -> None:
    """Import every decoder before the limits: nothing is loaded from disk after them."""
    import av
    import pillow_heif
    from PIL import Image, ImageOps  # noqa: F401

    for module in pkgutil.walk_packages(av.__path__, "av."):  # PyAV imports some lazily
        importlib.import_module(module.name)
    pillow_heif.register_heif_opener()
    Image.init()


def main() -> int:
    warnings.simplefilter("error")  # Pillow's bomb warning is a refusal, as is any other
    os.nice(10)  # a cleaning never takes the CPU from the tipsters the relay is serving
    _load_decoders()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    request: dict[str, Any] = json.loads(stdin.readline())
    lock_down(int(request["memory_bytes"]), int(request["cpu_seconds"]))
    data = stdin.read(int(request["max_bytes"]) + 1)
    if len(data) > int(request["max_bytes"]):
        return 3
    if request["kind"] == "photo":
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = int(request["max_pixels"])
        width, height, pixels = photo_pixels(data, str(request["format"]),
                                             int(request["max_px"]), int(request["max_pixels"]))
        stdout.write(struct.pack(">II", width, height) + pixels)
    else:
        voice_samples(data, str(request["format"]), int(request["rate"]),
                      int(request["max_seconds"]), stdout)
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
