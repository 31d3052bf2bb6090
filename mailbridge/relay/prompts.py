"""A station's spoken instructions for the form: short recordings, one set per language.

The folder named by ``stations.audio_prompts`` holds files ``LANG.EXT`` or
``LANG-ANYTHING.EXT`` (``vi.m4a``, ``hmn-1.ogg``, ``hmn-2.ogg``), played in name order. They
are read once at start-up and served at ``/audio/{station}/{digest}.{ext}``: the name is
the content's hash, so a phone may keep a file for a year and a changed recording is a
new address. The page costs no byte of them until the tipster taps play
(``<audio preload=none>``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

MEDIA_TYPES: Mapping[str, str] = {
    ".m4a": "audio/mp4", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".opus": "audio/ogg",
    ".wav": "audio/wav",
}
MAX_BYTES = 2 * 1024 * 1024  # a short prompt; more would be a lot to pay on 2G
CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Prompt:
    lang: str
    name: str  # digest + extension: the last part of its URL
    media_type: str
    data: bytes


class Prompts:
    """Every station's recordings, in memory: looked up by language or by URL name."""

    def __init__(self, folders: Mapping[str, Path], languages: Iterable[str]) -> None:
        known = set(languages)
        self._by_station: dict[str, list[Prompt]] = {
            station: _read(station, folder, known) for station, folder in folders.items()}

    def urls(self, station: str, lang: str) -> list[str]:
        return [f"/audio/{station}/{p.name}" for p in self._by_station.get(station, ())
                if p.lang == lang]

    def get(self, station: str, name: str) -> Prompt | None:
        return next((p for p in self._by_station.get(station, ()) if p.name == name), None)


def _read(station: str, folder: Path, languages: set[str]) -> list[Prompt]:
    key = f"stations.{station}.audio_prompts"
    if not folder.is_dir():
        raise ConfigError(f"{key}: {folder} is not a folder: create it with recordings "
                          "named by language (vi.m4a, hmn.m4a), or remove the key")
    prompts = []
    for path in sorted(folder.iterdir()):
        # The longest language the name starts with: hmn-chv-1.m4a is Chữ Mông Việt's.
        lang = max((lang for lang in languages
                    if path.stem == lang or path.stem.startswith(lang + "-")), key=len, default="")
        if path.suffix.lower() not in MEDIA_TYPES or not lang:
            raise ConfigError(f"{key}: {path.name} is not LANG.EXT or LANG-NAME.EXT with LANG "
                              f"one of {', '.join(sorted(languages))} and EXT one of "
                              f"{', '.join(MEDIA_TYPES)}: rename or remove it")
        data = path.read_bytes()
        if len(data) > MAX_BYTES:
            raise ConfigError(f"{key}: {path.name} is {len(data) // 1024} KB, more than "
                              f"{MAX_BYTES // 1024} KB: shorten it or encode it smaller")
        digest = hashlib.sha256(data).hexdigest()[:16]
        prompts.append(Prompt(lang, digest + path.suffix.lower(),
                              MEDIA_TYPES[path.suffix.lower()], data))
    return prompts
