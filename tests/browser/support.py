"""What the browser tests share: Debian's Chromium under Playwright, and the pages' OAuth clients
registered for a live server's address."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from patientkontrakt.domain.setup import build_service
from patientkontrakt.security.demo_clients import register_demo_clients
from patientkontrakt.storage.database import create_engine
from patientkontrakt.storage.repository import Store
from tests.conftest import make_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium under Playwright. Missing, it is a failure, not a skip: ``make test``
    installs it (``make chromium``)."""
    if not CHROMIUM.exists():
        pytest.fail(f"Debian's Chromium is not installed ({CHROMIUM} is missing), so the browser tests cannot "
                    "run: `make chromium` (or `apt-get install -y chromium` as root) installs it. The tests use "
                    "that browser only, never one downloaded by `playwright install`.")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def register_page_clients(database_url: str, base_url: str, signing_key: Path) -> None:
    """Register the pages' OAuth clients (staff pages, e-service) for the service at ``base_url``."""
    settings = make_settings(database_url, base_url=base_url, signing_key=signing_key)

    async def register() -> None:
        store = Store(create_engine(settings.database_url, pool_size=1))
        try:
            await register_demo_clients(build_service(settings, store), settings)
        finally:
            await store.dispose()

    asyncio.run(register())
