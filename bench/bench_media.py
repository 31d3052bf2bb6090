"""Media figures: photos and voice cleaned per second, memory per upload, what photo
cleaning costs text-only tipsters, and a 4 MB phone photo over emulated 2G with
JavaScript off and on. Prints numbers; asserts nothing.

The corpus is made here (tests/media_corpus.py): a 12-megapixel camera JPEG of about
4 MB with EXIF, GPS and XMP, and a 60 s voice message. The relay runs in this process
on a free loopback port (form + delivery into a Maildir); the browser is Debian's
Chromium with the network emulated through CDP.

    python -m bench.bench_media [--photos 8] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import FilePayload, sync_playwright

from bench.bench_form import ARGS, CHROMIUM, NETWORKS
from mailbridge.config import load_config
from mailbridge.relay.media import MediaCleaner, MediaLimits
from tests import media_corpus as corpus
from tests.e2e.support import HOTLINE_STATION, relay_in_thread, relay_toml

# Many tips an hour from one address to one station: neither limit is measured here.
CONFIG = relay_toml(HOTLINE_STATION, secret_env="MB_SECRET",
                    extra="station_tips_per_hour = 100000\n")
TOKEN = re.compile(r'name=t value="([^"]+)"')
FORM = "/s/ncs/cho"
MB = 1024 * 1024


def phone_photo() -> bytes:
    """About 4 MB, as a 12-megapixel phone camera writes it."""
    return corpus.jpeg_with_markers(4000, 3000, quality=95)


def cleaning(photos: int) -> None:
    photo, voice = phone_photo(), corpus.audio("ipod", "aac", seconds=60.0)
    cleaner = MediaCleaner(MediaLimits())

    async def one_by_one() -> float:
        start = time.perf_counter()
        for _ in range(photos):
            await cleaner.clean([photo], None)
        return time.perf_counter() - start

    async def together() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(cleaner.clean([photo], None) for _ in range(photos)))
        return time.perf_counter() - start

    async def voice_once() -> float:
        start = time.perf_counter()
        await cleaner.clean([], voice)
        return time.perf_counter() - start

    alone, shared, sound = asyncio.run(one_by_one()), asyncio.run(together()), 0.0
    sound = asyncio.run(voice_once())
    relay_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = len(photo) / MB
    print(f"photo: {size:.2f} MB JPEG, 4000x3000, EXIF + GPS + XMP")
    print(f"  one at a time      {photos / alone:5.2f} photos/s  {photos * size / alone:5.1f} MB/s"
          f"  ({alone / photos * 1000:.0f} ms each, worker start-up included)")
    print(f"  {photos} at once (2 workers) {photos / shared:5.2f} photos/s"
          f"  {photos * size / shared:5.1f} MB/s")
    print(f"voice: 60 s AAC, {len(voice) / 1024:.0f} KB: cleaned in {sound * 1000:.0f} ms")
    print(f"peak RSS of one worker: photo {worker_peak(photo):.0f} MB, voice "
          f"{worker_peak(voice):.0f} MB; this process (relay side and corpus) {relay_peak:.0f} MB")


def worker_peak(data: bytes) -> float:
    """MB: the peak RSS of the one worker that cleans *data*, in a process of its own."""
    probe = ("import asyncio, resource, sys\n"
             "from mailbridge.relay.media import MediaCleaner, MediaLimits, sniff\n"
             "data = sys.stdin.buffer.read()\n"
             "photo = sniff(data)[0] == 'photo'\n"
             "asyncio.run(MediaCleaner(MediaLimits()).clean([data] if photo else [],"
             " None if photo else data))\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    done = subprocess.run([sys.executable, "-c", probe], input=data, capture_output=True,
                          check=True)
    return int(done.stdout) / 1024


FAILED: list[int] = []  # status codes of tips that were not acknowledged
SENT: list[str] = []  # every text differs: the near-duplicate check is not measured either


def _tip(client: httpx.Client, files: list[Any] | None = None) -> float:
    start = time.perf_counter()
    token = TOKEN.search(client.get(FORM).text)
    assert token is not None
    text = f"Tin thử số {len(SENT)}: có người lạ ở bến sông lúc {time.monotonic()}."
    SENT.append(text)
    reply = client.post(FORM, data={"t": token.group(1), "category": "drugs", "text": text},
                        files=files)
    if reply.status_code != 200:
        FAILED.append(reply.status_code)
    return time.perf_counter() - start


def latency(base: str, tips: int) -> None:
    photo = phone_photo()
    with httpx.Client(base_url=base, timeout=120) as client:
        idle = [_tip(client) for _ in range(tips)]
    stop = threading.Event()

    def photos() -> None:
        with httpx.Client(base_url=base, timeout=120) as client:
            while not stop.is_set():
                _tip(client, [("photo", ("a.jpg", photo, "image/jpeg"))] * 3)

    senders = [threading.Thread(target=photos) for _ in range(2)]
    for sender in senders:
        sender.start()
    time.sleep(2)  # let the photo senders reach the cleaning
    with httpx.Client(base_url=base, timeout=120) as client:
        busy = [_tip(client) for _ in range(tips)]
    stop.set()
    for sender in senders:
        sender.join()

    def ms(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=20)[q] * 1000

    print(f"text-only tip (form + submit), {tips} each:")
    print(f"  idle relay                    p50 {ms(idle, 9):4.0f} ms  p95 {ms(idle, 18):4.0f} ms")
    print(f"  2 tipsters sending 3 photos   p50 {ms(busy, 9):4.0f} ms  p95 {ms(busy, 18):4.0f} ms")
    print(f"  not acknowledged: {len(FAILED)} {sorted(set(FAILED))}")


def over_2g(base: str, network: str, javascript: bool) -> tuple[int, float]:
    """(bytes of the photo in the form, seconds from tapping send to the receipt)."""
    latency_ms, down, up = NETWORKS[network]
    photo = phone_photo()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(java_script_enabled=javascript)
        page = context.new_page()
        page.goto(base + FORM)
        page.click("label[for=c-smuggling]")
        page.set_input_files("#photo", files=[
            FilePayload(name="IMG_0001.jpg", mimeType="image/jpeg", buffer=photo)])
        page.wait_for_selector("button[type=submit]:enabled")
        size = len(photo)
        if javascript:
            size = page.evaluate("[].reduce.call(document.getElementById('photo').files,"
                                 "function(n, f) { return n + f.size }, 0)")
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": latency_ms, "downloadThroughput": down,
            "uploadThroughput": up})
        start = time.perf_counter()
        page.click("button[type=submit]", no_wait_after=True)
        page.wait_for_selector(".code", timeout=1_800_000)
        seconds = time.perf_counter() - start
        browser.close()
    return size, seconds


@contextmanager
def running_relay() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "mailbridge.toml").write_text(CONFIG, encoding="utf-8")
        settings = load_config(Path(folder) / "mailbridge.toml",
                               env={"MB_SECRET": "bench-" + "x" * 40})
        with relay_in_thread(settings) as base:
            yield base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--tips", type=int, default=40)
    parser.add_argument("--quick", action="store_true",
                        help="skip the JavaScript-off photo over 2G (about 12 minutes)")
    parser.add_argument("--no-cleaning", action="store_true", help="skip the cleaning figures")
    args = parser.parse_args()
    if not args.no_cleaning:
        cleaning(args.photos)
    with running_relay() as base:
        latency(base, args.tips)
    network = next(iter(NETWORKS))
    print(f"a {len(phone_photo()) / MB:.1f} MB phone photo over {network}:")
    for javascript in ((True,) if args.quick else (True, False)):
        with running_relay() as base:
            size, seconds = over_2g(base, network, javascript)
        print(f"  JavaScript {'on ' if javascript else 'off'}  {size / 1024:6.0f} KB uploaded"
              f"  receipt after {seconds:6.1f} s")


if __name__ == "__main__":
    main()
