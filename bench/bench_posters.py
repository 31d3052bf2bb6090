"""Posters: what one costs and what the demo's set costs, on this box.

Renders the demo config's posters in one process: each PDF (fpdf2, the fonts subset into
it) and its 300 dpi PNG (pdfium), timed apart, then the file sizes and each code's QR
version. Prints numbers; asserts nothing.

    python -m bench.bench_posters
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from mailbridge.config import load_config
from mailbridge.demo import write_demo_config
from mailbridge.fonts import andika
from mailbridge.relay.posters import (
    find_template,
    form_url,
    load_template,
    plan,
    qr_matrix,
    render_pdf,
    render_png,
)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = load_config(write_demo_config(Path(folder) / "demo", 8080))
        template = load_template(find_template("default", settings.path.parent),
                                 settings.relay.languages)
        posters = plan(settings)
        pdf_s: list[float] = []
        png_s: list[float] = []
        pdf_bytes: list[int] = []
        png_bytes: list[int] = []
        start = time.perf_counter()
        for poster in posters:
            t0 = time.perf_counter()
            pdf = render_pdf(template, poster, settings.relay.public_url)
            t1 = time.perf_counter()
            png = Path(folder) / f"{poster.station.id}-{poster.stem}.png"
            render_png(pdf, png)
            t2 = time.perf_counter()
            pdf_s.append(t1 - t0)
            png_s.append(t2 - t1)
            pdf_bytes.append(len(pdf))
            png_bytes.append(png.stat().st_size)
        total = time.perf_counter() - start
    versions = sorted({qr_matrix(form_url(settings.relay.public_url, p.station,
                                          p.placement))[1] for p in posters})
    print(f"font: {'Andika' if andika() else 'DejaVu Sans'}")
    print(f"{len(posters)} posters (A4 and A5) in {total:.1f} s")
    print(f"PDF: median {statistics.median(pdf_s) * 1000:.0f} ms "
          f"(first {pdf_s[0] * 1000:.0f} ms), {statistics.median(pdf_bytes) / 1024:.0f} KiB")
    print(f"PNG 300 dpi: median {statistics.median(png_s) * 1000:.0f} ms, "
          f"{statistics.median(png_bytes) / 1024:.0f} KiB")
    print(f"QR versions: {versions}")


if __name__ == "__main__":
    main()
