"""Shared fixtures for end-to-end tests: one headless Chromium per module, a relay.

The browser is Debian's /usr/bin/chromium driven by Playwright (never a downloaded
browser), with the arguments this closed, root-run environment needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbridge.config import load_config
from tests.e2e.support import HOTLINE_STATION, relay_in_thread, relay_toml
from tests.servers.mailstack import MISSING_HINT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SECRET = "browser-test-secret-" + "b" * 32
RELAY_CONFIG = relay_toml(HOTLINE_STATION, secret_env="MB_SECRET", rate=1000)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium shared by a module (start-up costs seconds).

    Module scope, not session: Playwright's sync API keeps an asyncio loop running in
    the main thread while it is open, and later tests that call asyncio.run() would fail.
    """
    if not CHROMIUM.exists():
        pytest.exit(f"{CHROMIUM} is missing: {MISSING_HINT}", returncode=3)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@dataclasses.dataclass
class RunningRelay:
    base: str
    folder: Path


@pytest.fixture(scope="module")
def running_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRelay]:
    """The whole relay (form + delivery into a Maildir) in a thread on a free port."""
    folder = tmp_path_factory.mktemp("relay")
    (folder / "mailbridge.toml").write_text(RELAY_CONFIG, encoding="utf-8")
    settings = load_config(folder / "mailbridge.toml", env={"MB_SECRET": SECRET})
    with relay_in_thread(settings) as base:
        yield RunningRelay(base, folder)
