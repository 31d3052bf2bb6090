"""Near-duplicate detection over shingles (pure logic)."""

from __future__ import annotations

import random

import pytest

from mailbridge.core.shingles import NearDuplicates, shingles, similarity, sketch

KEY = b"k" * 16
TEXT = ("Có một nhóm người lạ mang hàng qua suối gần bản Nậm Cha vào ban đêm, "
        "họ đi xe máy không biển số và nói tiếng nước ngoài.")


def test_copies_are_marked_from_the_third_on() -> None:
    seen = NearDuplicates(KEY, copies=2)
    assert [seen.seen("ncs", TEXT) for _ in range(2)] == [False, False]
    assert seen.seen("ncs", TEXT + " Xin hãy đến!") is True  # a few words added
    assert seen.seen("ncs", TEXT.upper()) is True  # case does not hide a copy
    assert seen.seen("abc", TEXT) is False  # each station has its own recent tips


def test_different_tips_about_one_event_are_not_copies() -> None:
    seen = NearDuplicates(KEY, copies=1)
    assert seen.seen("ncs", TEXT) is False
    assert seen.seen("ncs", "Tối qua tôi thấy người lạ mang hàng qua suối, đi xe máy.") is False
    assert seen.seen("ncs", "ma túy") is False
    assert seen.seen("ncs", "ma tuý ở chợ") is False  # short: must match exactly
    assert seen.seen("ncs", "") is False and seen.seen("ncs", "") is False  # a photo alone


def test_the_window_forgets_old_tips() -> None:
    seen = NearDuplicates(KEY, window=3, copies=1)
    seen.seen("ncs", TEXT)
    for n in range(3):
        seen.seen("ncs", f"tin khác số {n} về chuyện khác hẳn ở bản bên")
    assert seen.seen("ncs", TEXT) is False


def test_only_keyed_hashes_are_kept() -> None:
    mine, other = shingles(TEXT, KEY), shingles(TEXT, b"o" * 16)
    assert mine and similarity(sketch(mine), sketch(other)) == 0.0
    assert all(0 <= h < 2**64 for h in mine)


def test_a_long_text_is_compared_by_its_sketch() -> None:
    long = " ".join(f"{TEXT} đoạn {n}" for n in range(40))
    assert len(shingles(long, KEY)) > 64 and len(sketch(shingles(long, KEY))) == 64
    seen = NearDuplicates(KEY, copies=1)
    assert seen.seen("ncs", long) is False
    assert seen.seen("ncs", long + " thêm một câu cuối.") is True
    assert seen.seen("ncs", " ".join(f"tin khác hẳn số {n} ở bản bên" for n in range(200))) \
        is False


def test_look_does_not_remember_until_told() -> None:
    """The relay looks before a tip is stored and remembers it only once it is, so a
    refused copy (a double-tap) never counts towards the mark."""
    seen = NearDuplicates(b"k" * 16)
    for _ in range(3):
        sighting = seen.look("ncs", TEXT)
        assert sighting.copied is False  # nothing was remembered
    seen.remember(sighting)
    seen.remember(seen.look("ncs", TEXT))
    assert seen.look("ncs", TEXT).copied is True
    assert seen.look("ncs", "").copied is False


def test_similarity_is_the_jaccard_index_of_the_two_sketches() -> None:
    rng = random.Random(7)
    for _ in range(500):
        pool = [rng.getrandbits(64) for _ in range(rng.randint(1, 90))]
        a = frozenset(rng.sample(pool, rng.randint(1, len(pool))))
        b = frozenset(rng.sample(pool, rng.randint(1, len(pool))))
        assert similarity(a, b) == pytest.approx(len(a & b) / len(a | b), abs=1e-12)
    assert similarity(frozenset(), frozenset({1})) == similarity(frozenset(), frozenset()) == 0.0


def test_a_copy_among_many_others_is_found_wherever_it_is_in_the_window() -> None:
    texts = [f"người lạ số {n} đi qua bản lúc {n} giờ sáng hôm qua" for n in range(150)]
    copy = "có hai xe máy chở hàng qua đường mòn gần cột mốc vào ban đêm"
    for first, second in ((0, 1), (3, 140), (148, 149)):
        seen = NearDuplicates(KEY, window=150)
        for n, text in enumerate(texts):
            seen.seen("ncs", copy if n in (first, second) else text)
        assert seen.look("ncs", copy).copied
        assert not seen.look("ncs", "một tin khác hẳn, không giống tin nào trước đó").copied
