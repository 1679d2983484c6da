"""Fixtures of the dashboard tests: a service on a 3-node testbed and a real headless Chromium.

The browser is Debian's ``chromium`` package (installed by ``.ci/run``), driven by
Playwright for Python; nothing is downloaded at test time. The browser tests are
skipped when either is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import account_key, service_on_testbed

CHROMIUM = os.environ.get("HPCBATCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
DASK_URL = "http://127.0.0.1:8787/status"
"""The Dask dashboard URL the test service is configured with (the page only links to it)."""



class Env:
    """The service under test: client, testbed, service thread, endpoint and key."""

    def __init__(self, client: Any, bed: Any, thread: Any, state_dir: Path) -> None:
        self.client, self.bed, self.thread = client, bed, thread
        self.endpoint = client.endpoint
        self.key = account_key(state_dir)
        self.service = thread.runtime.service


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A 3-host testbed (127.0.15.x), a service using it, and a pool ``heat`` of 3 nodes."""
    tmp = tmp_path_factory.mktemp("dash")
    with service_on_testbed(tmp, 3, "127.0.15.1", dask_dashboard_url=DASK_URL) as (client, bed, th):
        client.create_pool({"id": "heat", "vmSize": "testbed", "targetDedicatedNodes": 3})
        assert [n.state for n in client.wait_for_pool("heat", timeout_s=180)] == ["idle"] * 3
        yield Env(client, bed, th, tmp / "state")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's), for the module; skipped without it or Playwright."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def signed_in_page(browser: Any, env: Env, width: int = 1280, height: int = 900) -> Any:
    """A new browser context signed in through a one-time link; its page on the dashboard."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.goto(env.client.dashboard_sign_in_url())
    page.wait_for_url(f"{env.endpoint}/dashboard/")
    return page
