"""Near-duplicate tips: many copies of one text, told apart from tips that merely agree.

A text becomes the set of its word 4-grams (shingles), each kept only as 64 bits of a
keyed BLAKE2b, under a key the relay draws at start and never writes, and of those only
the 64 smallest (a bottom-k MinHash sketch, so a long text costs what a short one
does): in memory only, and a memory dump does not give the words back without the key.
A tip is likely spam when its sketch's estimated Jaccard similarity to at least
``copies`` of the last ``window`` tips of the same station reaches ``threshold``.
Texts shorter than a shingle count as one shingle, so short ones must match exactly.
A tip with no text (a photo alone) is never a copy. It is a mark for the officers,
never a refusal.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import deque
from dataclasses import dataclass

SHINGLE_WORDS = 4
SKETCH_SIZE = 64
_WORD = re.compile(r"\w+")


def shingles(text: str, key: bytes, *, size: int = SHINGLE_WORDS) -> frozenset[int]:
    """The keyed 64-bit hashes of the text's word *size*-grams (NFC and case-folded;
    accents kept, since they tell Vietnamese words apart)."""
    words = _WORD.findall(unicodedata.normalize("NFC", text).casefold())
    grams = [" ".join(words[i:i + size]) for i in range(max(len(words) - size + 1, 1))]
    return frozenset(int.from_bytes(hashlib.blake2b(g.encode(), key=key, digest_size=8).digest())
                     for g in grams if g)


def sketch(hashes: frozenset[int], k: int = SKETCH_SIZE) -> frozenset[int]:
    """The *k* smallest hashes (a bottom-k MinHash sketch): all of them for a short text."""
    return frozenset(sorted(hashes)[:k])


def similarity(a: frozenset[int], b: frozenset[int]) -> float:
    """Jaccard similarity of two sketches: exact while both texts have at most
    ``SKETCH_SIZE`` shingles, an estimate beyond. The union's size comes from the
    intersection's, not from building the union: a tip is compared with up to
    ``window`` others, and that halves the cost of each."""
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


@dataclass(frozen=True)
class Sighting:
    """A tip's sketch and whether recent tips of its station are near-copies of it."""

    station_id: str
    sketch: frozenset[int]
    copied: bool


class NearDuplicates:
    """The last *window* tips' sketches per station; ``seen`` marks copies."""

    def __init__(self, key: bytes, *, window: int = 200, copies: int = 2,
                 threshold: float = 0.8) -> None:
        self._key = key
        self._window = window
        self._copies = copies
        self._threshold = threshold
        self._recent: dict[str, deque[frozenset[int]]] = {}

    def seen(self, station_id: str, text: str) -> bool:
        """Remember this tip's text; True when at least ``copies`` recent tips of the
        station are near-copies of it."""
        sighting = self.look(station_id, text)
        self.remember(sighting)
        return sighting.copied

    def look(self, station_id: str, text: str) -> Sighting:
        """``seen`` without remembering: the relay remembers a tip once it is stored,
        so a refused copy (a double-tap) does not count."""
        current = sketch(shingles(text, self._key))
        if not current:
            return Sighting(station_id, current, False)
        similar = 0
        for earlier in self._recent.get(station_id, ()):
            if similarity(current, earlier) >= self._threshold:
                similar += 1
                if similar >= self._copies:  # a flood of copies stops here, not at window
                    return Sighting(station_id, current, True)
        return Sighting(station_id, current, False)

    def remember(self, sighting: Sighting) -> None:
        if sighting.sketch:
            self._recent.setdefault(sighting.station_id,
                                    deque(maxlen=self._window)).append(sighting.sketch)
