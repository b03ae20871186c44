"""One `kiln serve` and one headless chromium for the browser tests; a page per test, whose
screenshot is kept as the test's artifact.

Without Playwright or chromium the tests are skipped, saying which is missing; with
`KILN_REQUIRE_BROWSER=1` (CI) they fail instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import chromium, kiln, kiln_serve, missing_browser
from tests.conftest import API_KEY


# package scope: Playwright's sync API runs an event loop on the main thread while it is open,
# which would break every later test that calls asyncio.run
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    reason = missing_browser()
    if reason is not None:
        if os.environ.get("KILN_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="package")
def playground_url(browser: Any, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("kiln-serve")
    shutil.copytree(data_dir / "models", root / "models")  # the tiny models, already built
    kiln(root, "models", "init")
    with kiln_serve(root, API_KEY, root / "serve.log") as url:
        yield url


@pytest.fixture
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where this test's screenshots go: `$KILN_TEST_ARTIFACTS/<test>/`, else its tmp dir."""
    root = os.environ.get("KILN_TEST_ARTIFACTS")
    folder = Path(root) / request.node.name if root else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser: Any, playground_url: str, artifacts: Path) -> Iterator[Any]:
    """The playground in a fresh context; fails the test on any script error or CSP violation."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: problems.append(f"console: {message.text}")
            if message.type == "error" else None)
    page.goto(playground_url)
    yield page
    page.screenshot(path=artifacts / "page.png", full_page=True)
    print(f"screenshot: {artifacts / 'page.png'}")
    context.close()
    assert not problems, problems
