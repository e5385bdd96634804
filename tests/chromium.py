"""Debian's chromium for the browser tests, driven by Playwright (never its own download).

Chromium is required in CI (a browser test fails there without it); elsewhere the tests that
need it are skipped if it is absent. `executable_path=CHROMIUM` with `ARGS` keeps it offline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]


def require_chromium() -> None:
    """Call at the top of a browser test module: fail in CI, skip elsewhere, without chromium."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: CI must install it (.ci/run)", pytrace=False)
        pytest.skip("chromium is not installed (CI installs it)", allow_module_level=True)


@contextlib.contextmanager
def launched() -> Iterator[Any]:
    """A headless chromium for a module's tests (Playwright's `Browser`), closed at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
