"""Hostile and ordinary phone files, made here (never downloaded), each full of markers.

Every identifying trace a phone writes is a ``MARKER-…`` value, so a test can
search the cleaned bytes for ``MARKER``: none may survive.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from fractions import Fraction

import av
import numpy as np
import pillow_heif
from PIL import Image, PngImagePlugin

MARKER = b"MARKER"
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
       b'22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" '
       b'dc:creator="MARKER-XMP-OWNER"/></rdf:RDF></x:xmpmeta>')


def _picture(width: int, height: int) -> Image.Image:
    """A photo-like gradient (compresses like a real one, unlike a flat colour)."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    noise = np.random.default_rng(7).integers(0, 40, (height, width), dtype=np.uint8)
    rgb = np.stack([(x + y) / 2 + noise, x * np.ones_like(y), y * np.ones_like(x)], axis=2)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def _exif(image: Image.Image, orientation: int = 6) -> Image.Exif:
    exif = image.getexif()
    exif[0x010F] = "MARKER-MAKE"  # Make
    exif[0x0110] = "MARKER-MODEL"  # Model
    exif[0x013B] = "MARKER-ARTIST"  # Artist: the owner's name
    exif[0x0132] = "2026:11:23 09:47:13"  # DateTime
    exif[0x0112] = orientation  # 6: the camera was turned, the pixels are not
    exif.get_ifd(0x8769)[0x927C] = b"MARKER-MAKERNOTE"  # MakerNote in the Exif IFD
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (21.0, 48.0, 7.0), 3: "E", 4: (103.0, 12.0, 35.0),
                27: "MARKER-GPS"})  # GPSProcessingMethod
    return exif


def jpeg_with_markers(width: int = 1600, height: int = 1200, quality: int = 90) -> bytes:
    """EXIF (make, model, owner, GPS, maker note, orientation 6), XMP, ICC text and a
    comment: what a phone camera writes, and more."""
    image = _picture(width, height)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, exif=_exif(image), xmp=XMP,
               icc_profile=b"MARKER-ICC-PROFILE-TEXT" * 4, comment=b"MARKER-COMMENT")
    return out.getvalue()


def heic_with_exif() -> bytes:
    image = _picture(800, 600)
    heif = pillow_heif.from_pillow(image)
    out = io.BytesIO()
    heif.save(out, format="HEIF", exif=_exif(image, orientation=1).tobytes(), xmp=XMP,
              quality=70)
    return out.getvalue()


def png_with_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "MARKER-PNG-AUTHOR")
    info.add_itxt("Location", "MARKER-PNG-PLACE", zip=True)
    image = _picture(640, 480).convert("RGBA")
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    return out.getvalue()


def webp_with_exif() -> bytes:
    image = _picture(640, 480)
    out = io.BytesIO()
    image.save(out, "WEBP", exif=_exif(image, orientation=1), xmp=XMP, quality=70)
    return out.getvalue()


def png_bomb(side: int = 40_000) -> bytes:
    """A tiny PNG whose header claims *side*² pixels (1.6 billion by default)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    row = b"\0" + b"\0" * (side // 8 + 1)
    idat = zlib.compress(row * 64, 9)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def truncated_jpeg() -> bytes:
    data = jpeg_with_markers(800, 600)
    return data[: len(data) // 2]


def zip_as_jpeg() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("MARKER-ZIP.txt", "MARKER-ZIP-CONTENT")
    return out.getvalue()


def jpeg_zip_polyglot() -> bytes:
    """A real JPEG with a zip appended: opens as both."""
    return jpeg_with_markers(640, 480) + zip_as_jpeg()


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)


def audio(container: str, codec: str, seconds: float = 3.0, *, rate: int = 48_000,
          video: bool = False, channels: int = 1) -> bytes:
    """*seconds* of tone in *container* with *codec*, tagged with title, artist and a
    location (MP4 ``udta``/``©xyz``), plus a short video track when *video*."""
    out = io.BytesIO()
    options = {"movflags": "+use_metadata_tags"} if container in ("mp4", "ipod", "3gp") else {}
    layout = "mono" if channels == 1 else "stereo"
    with av.open(out, "w", format=container, options=options) as box:
        box.metadata.update({"title": "MARKER-TITLE", "artist": "MARKER-OWNER",
                             "location": "+21.8014+103.2097/", "comment": "MARKER-COMMENT",
                             "encoder": "MARKER-PHONE-MODEL"})
        picture = None
        if video:
            picture = box.add_stream("mpeg4", rate=10)
            assert isinstance(picture, av.VideoStream)
            picture.width, picture.height, picture.pix_fmt = 160, 120, "yuv420p"
            picture.metadata["handler_name"] = "MARKER-VIDEO-HANDLER"
        sound = box.add_stream(codec, rate=rate, layout=layout,
                               options={"strict": "experimental"})  # FFmpeg's own Vorbis
        assert isinstance(sound, av.AudioStream)
        sound.metadata["title"] = "MARKER-STREAM-TITLE"
        fmt = sound.codec_context.format.name
        tone = np.repeat(_tone(seconds, rate)[None, :], channels, axis=0)
        step = sound.codec_context.frame_size or 1024
        for start in range(0, tone.shape[1], step):
            piece = tone[:, start:start + step]
            kind, scale = {"s16": (np.int16, 1), "s32": (np.int32, 65536),
                           "flt": (np.float32, 1 / 32768)}[fmt.rstrip("p")]
            piece = (piece.astype(np.float64) * scale).astype(kind)
            if not fmt.endswith("p"):  # packed: the channels interleaved on one row
                piece = piece.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format=fmt,
                                               layout=layout)
            frame.rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            box.mux(sound.encode(frame))
        box.mux(sound.encode(None))
        if picture is not None:
            for n in range(int(seconds * 10)):
                still = av.VideoFrame.from_ndarray(
                    np.full((120, 160, 3), n * 8 % 255, np.uint8), format="rgb24")
                still.pts = n
                box.mux(picture.encode(still.reformat(format="yuv420p")))
            box.mux(picture.encode(None))
    return out.getvalue()


def duration(data: bytes) -> float:
    """Seconds of sound in *data*, counted from the decoded samples."""
    with av.open(io.BytesIO(data), mode="r") as box:
        stream = box.streams.audio[0]
        return sum(frame.samples for frame in box.decode(stream)) / stream.rate


VOICES = {
    "m4a": lambda: audio("ipod", "aac"),
    "mp4-video": lambda: audio("mp4", "aac", video=True),
    "mov-video": lambda: audio("mov", "aac", video=True),  # an iPhone's: ©xyz, not loci
    "3gp-amr": lambda: audio("3gp", "libopencore_amrnb", rate=8000),
    "ogg-vorbis": lambda: audio("ogg", "vorbis", rate=44_100, channels=2),
    "webm-opus": lambda: audio("webm", "libopus"),
    "ogg-opus": lambda: audio("ogg", "libopus"),  # WhatsApp's and Telegram's voice notes
    "mp3": lambda: audio("mp3", "libmp3lame", rate=44_100),
    "wav": lambda: audio("wav", "pcm_s16le"),
}
PHOTOS = {
    "jpeg": jpeg_with_markers,
    "heic": heic_with_exif,
    "png": png_with_text,
    "webp": webp_with_exif,
    "polyglot": jpeg_zip_polyglot,
}
