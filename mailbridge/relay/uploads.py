"""Reading a form with files (``multipart/form-data``) and saying why a file was refused.

Starlette's parser with its limits on files, fields and field size, fed by a
stream that stops at the tip's byte limit, and with every file kept in memory:
an upload never becomes a temporary file, so it never touches the disk before
it is cleaned (``media.py``) and, cleaned, stored in the tip's outbox row.
The client's file names and types are read by nobody.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from ..errors import MediaRefused
from .i18n import format_number, gettext_for
from .media import PHOTO, MediaLimits

MULTIPART_TYPE = "multipart/form-data"


@dataclass(frozen=True)
class Uploads:
    """The files the tipster chose, in order (an input left empty sends nothing)."""

    photos: tuple[bytes, ...] = ()
    voice: bytes | None = None

    def __bool__(self) -> bool:
        return bool(self.photos) or self.voice is not None


class BodyTooLarge(Exception):
    """The request body is over the tip's limit (answered 413)."""


class BodyUnreadable(Exception):
    """The body is not a form we could read (answered 400)."""


class RelayBusy(Exception):
    """Uploads being received already fill the relay's memory budget (answered 503)."""


class UploadBudget:
    """Bytes of uploads being received by all requests together. Past the limit a new
    chunk is refused, so a flood of large bodies cannot take the relay's memory (the
    loop is single-threaded: no lock needed)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


class _InMemoryParser(MultiPartParser):
    """Never spills a file to a temporary file: the stream below bounds the memory."""

    spool_max_size = 1 << 62


async def read_multipart(request: Request, allowed: frozenset[str], *, max_bytes: int,
                         max_field_bytes: int, max_files: int, budget: UploadBudget
                         ) -> tuple[dict[str, str], Uploads]:
    """The allow-listed text fields (first of each) and the ``photo``/``voice`` files."""
    length = request.headers.get("content-length", "")
    if length and (not length.isdigit() or int(length) > max_bytes):
        raise BodyTooLarge
    seen = 0

    async def stream() -> AsyncGenerator[bytes, None]:
        nonlocal seen
        async for chunk in request.stream():
            if seen + len(chunk) > max_bytes:
                raise BodyTooLarge
            if not budget.take(len(chunk)):
                raise RelayBusy
            seen += len(chunk)
            yield chunk

    parser = _InMemoryParser(request.headers, stream(), max_files=max_files,
                             max_fields=len(allowed) + 30, max_part_size=max_field_bytes)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BodyUnreadable from exc
    finally:
        budget.give(seen)
    fields: dict[str, str] = {}
    photos: list[bytes] = []
    voice: bytes | None = None
    try:
        for name, value in form.multi_items():
            if isinstance(value, str):
                if name in allowed and name not in fields:
                    fields[name] = value
            elif isinstance(value, UploadFile) and (value.filename or value.size):
                data = await value.read()
                if name == "photo":
                    photos.append(data)
                elif name == "voice" and voice is None:
                    voice = data
    finally:
        await form.close()
    return fields, Uploads(tuple(photos), voice)


def refusal_text(lang: str, refused: MediaRefused, limits: MediaLimits) -> str:
    """Which file, why, and that the text is kept: in the tipster's language."""
    _ = gettext_for(lang)
    if refused.field == PHOTO:
        which = _("photo %(number)s") % {"number": format_number(refused.number, lang)}
        max_bytes = limits.photo_max_bytes
    else:
        which = _("the voice message")
        max_bytes = limits.voice_max_bytes
    if refused.reason == "empty":
        text = _("Nothing was sent: %(file)s is empty. Your text is kept: choose the file "
                 "again, or send without it.")
    elif refused.reason == "too_big":
        text = _("Nothing was sent: %(file)s is larger than %(mb)s MB. Your text is kept: "
                 "choose a smaller file, or send without it.")
    elif refused.reason == "wrong_type" and refused.field == PHOTO:
        text = _("Nothing was sent: %(file)s is not a photo (JPEG, PNG, WebP or HEIC). Your "
                 "text is kept: choose a photo, or send without it.")
    elif refused.reason == "wrong_type":
        text = _("Nothing was sent: %(file)s is not a sound recording. Your text is kept: "
                 "choose a recording, or send without it.")
    else:
        text = _("Nothing was sent: %(file)s could not be read and cleaned. Your text is "
                 "kept: choose another file, or send without it.")
    return text % {"file": which, "mb": format_number(max_bytes // (1024 * 1024), lang)}


def too_many_text(lang: str, max_photos: int) -> str:
    _ = gettext_for(lang)
    return _("Nothing was sent: at most %(max)s photos. Your text is kept: choose fewer "
             "photos.") % {"max": format_number(max_photos, lang)}


def too_large_text(lang: str, max_bytes: int) -> str:
    """A body over every file's limit together is refused unread, its text too: say so
    (the form comes back empty), never that the text was kept."""
    _ = gettext_for(lang)
    return _("Nothing was sent, not even your text: the photos and the recording together "
             "are larger than %(mb)s MB. Write it again, and choose fewer or smaller files, "
             "or send without them.") % {"mb": format_number(max_bytes // (1024 * 1024), lang)}
