"""Form figures: page weight (raw and gzip) and time to usable on emulated 2G and 3G.

Runs the real relay (form + delivery worker) in this process on a free loopback
port and loads the form in Debian's Chromium, each load in a fresh browser
context (a cold connection, as a phone that just scanned the poster). Slow
networks are emulated through CDP. Prints numbers; asserts nothing.

    python -m bench.bench_form [--runs 5]
"""

from __future__ import annotations

import argparse
import gzip
import re
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

from mailbridge.config import load_config
from mailbridge.relay.web import CSS
from tests.e2e.support import HOTLINE_STATION, relay_in_thread, relay_toml

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# latency in ms, throughput in bytes/s (kbit/s * 1000 / 8)
NETWORKS = {
    "2G (300 ms, 250/50 kbit/s)": (300, 250_000 / 8, 50_000 / 8),
    "3G (100 ms, 750/250 kbit/s)": (100, 750_000 / 8, 250_000 / 8),
}
CONFIG = relay_toml(HOTLINE_STATION, secret_env="MB_SECRET")
NAV_TIMING = """() => { const n = performance.getEntriesByType("navigation")[0];
  return {response: n.responseEnd,
          interactive: n.domInteractive, load: n.loadEventEnd}; }"""


@contextmanager
def relay(folder: Path) -> Iterator[str]:
    (folder / "mailbridge.toml").write_text(CONFIG, encoding="utf-8")
    settings = load_config(folder / "mailbridge.toml", env={"MB_SECRET": "bench-" + "x" * 40})
    with relay_in_thread(settings) as base:
        yield base


def weights(base: str) -> None:
    with httpx.Client(base_url=base) as client:
        form = client.get("/s/ncs/cho")
        token = re.search(r'name=t value="([^"]+)"', form.text)
        assert token is not None
        receipt = client.post("/s/ncs/cho", data={"t": token.group(1), "category": "drugs",
                                                  "text": "Tin thử: có người lạ ở bến sông."})
    svg = "".join(re.findall(r"<svg.*?</svg>", form.text, re.S))
    print("page weight (bytes)            raw    gzip-6  on the wire")
    for name, body, wire in (("form page (everything)", form.content,
                              form.num_bytes_downloaded),
                             ("receipt page", receipt.content, receipt.num_bytes_downloaded)):
        print(f"  {name:<26} {len(body):6d} {len(gzip.compress(body, 6)):8d} {wire:8d}")
    for name, part in (("  of which inline CSS", CSS), ("  of which pictograms", svg)):
        data = part.encode()
        print(f"  {name:<26} {len(data):6d} {len(gzip.compress(data, 6)):8d}        -")
    print("  other resources loaded: none (CSS, SVG and scripts inline; no image, no font)")


def timings(base: str, runs: int) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for label, (latency, down, up) in NETWORKS.items():
                loads: list[dict[str, float]] = []
                walls: list[float] = []
                submits: list[float] = []
                for _ in range(runs):
                    # JavaScript off, as the figures say: with it on, the form's script
                    # sends the tip itself and the page does not navigate.
                    context = browser.new_context(viewport={"width": 360, "height": 640},
                                                  locale="vi-VN", java_script_enabled=False)
                    page = context.new_page()
                    cdp = context.new_cdp_session(page)
                    cdp.send("Network.enable")
                    cdp.send("Network.emulateNetworkConditions", {
                        "offline": False, "latency": latency,
                        "downloadThroughput": down, "uploadThroughput": up})
                    start = time.perf_counter()
                    page.goto(base + "/S/NCS/CHO", wait_until="load")
                    walls.append((time.perf_counter() - start) * 1000)
                    loads.append(_timing(page))
                    page.click("label[for=c-smuggling]")
                    page.fill("#text", "Có người mang nhiều bao hàng qua suối lúc chiều tối.")
                    start = time.perf_counter()
                    with page.expect_navigation(wait_until="load"):
                        page.click("button[type=submit]")
                    submits.append((time.perf_counter() - start) * 1000)
                    context.close()
                med = {k: statistics.median(x[k] for x in loads) for k in loads[0]}
                print(f"{label}, median of {runs} cold loads:")
                print(f"  page received {med['response']:.0f} ms,"
                      f" usable (DOM interactive) {med['interactive']:.0f} ms,"
                      f" load event {med['load']:.0f} ms; wall {statistics.median(walls):.0f} ms")
                print(f"  send -> receipt shown (incl. receipt hash and commit): "
                      f"{statistics.median(submits):.0f} ms")
        finally:
            browser.close()


def _timing(page: Any) -> dict[str, float]:
    result: dict[str, float] = page.evaluate(NAV_TIMING)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-form-") as folder, relay(Path(folder)) as base:
        weights(base)
        timings(base, args.runs)


if __name__ == "__main__":
    main()
