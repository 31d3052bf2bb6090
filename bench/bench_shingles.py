"""Near-duplicate check cost: one tip against a full window of recent tips.

Prints the time of ``NearDuplicates.seen`` per tip for short and long texts, with the
window full (200 tips of the same station). Prints numbers; asserts nothing.

    python -m bench.bench_shingles [--window 200] [--tips 2000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from mailbridge.core.shingles import NearDuplicates

WORDS = ["người", "lạ", "hàng", "hóa", "qua", "suối", "bản", "chợ", "phiên", "xe", "máy",
         "ban", "đêm", "ma", "túy", "súng", "tự", "chế", "biên", "giới", "đường", "mòn", "nhà",
         "dân", "tạm", "trú", "trâu", "nương", "ngô"]


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--tips", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(7)
    for words in (40, 800):  # a usual tip; max_text_chars (5,000) of Vietnamese
        seen = NearDuplicates(b"k" * 16, window=args.window)
        for _ in range(args.window):
            seen.seen("ncs", _text(rng, words))
        times = []
        for _ in range(args.tips // (1 if words < 100 else 10)):
            text = _text(rng, words)
            start = time.perf_counter()
            seen.seen("ncs", text)
            times.append(time.perf_counter() - start)
        q = statistics.quantiles(times, n=100)
        print(f"near-duplicate check, {words} words against {args.window} recent tips: "
              f"p50 {q[49] * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms")


if __name__ == "__main__":
    main()
