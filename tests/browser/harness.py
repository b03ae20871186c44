"""`kiln serve` on a loopback port and Debian's chromium under Playwright, for the browser tests
and the README's screenshot (tests/browser/screenshot.py).

Playwright drives the system's chromium through its executable path: its own browser download
needs the internet. `KILN_CHROMIUM` names another executable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tests.cluster.fronts import Front

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


def chromium_path() -> str | None:
    """`$KILN_CHROMIUM`, else the chromium on PATH (Debian's package), or None."""
    return shutil.which(os.environ.get("KILN_CHROMIUM") or "chromium") or shutil.which("chromium-browser")


def missing_browser() -> str | None:
    """Why a browser cannot be driven here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install -e '.[test]' (make test does)"
    if chromium_path() is None:
        return "chromium is not installed: apt-get install chromium (make test does, as root)"
    return None


def kiln(data_dir: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "kiln.cli", "--data-dir", str(data_dir), *args],
                   check=True, capture_output=True, timeout=600)


@contextmanager
def kiln_serve(data_dir: Path, api_key: str, log_path: Path, timeout_s: float = 180) -> Iterator[str]:
    """`kiln serve` of `data_dir` (its models registered) accepting `api_key`; yields the
    playground's URL once `/ready` answers 200. Its output goes to `log_path`."""
    front = Front(data_dir, {"KILN_API_KEYS": api_key, "KILN_TORCH_THREADS": "1"}, log_path)
    try:
        front.wait_ready(timeout_s)
        yield front.base + "/"
    finally:
        front.stop()


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless chromium (the system's), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # /dev/shm is small in containers; chromium falls back to /tmp
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                             args=["--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


def connect(page: Page, api_key: str, model: str) -> None:
    """Enter the key, connect, and pick `model` once `modelSearch` has filled the picker."""
    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Connect").click()
    page.get_by_label("Model", exact=True).select_option(model)
