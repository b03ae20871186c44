"""Make the README's screenshot of the playground, docs/playground.png:

    .venv/bin/python -m tests.browser.screenshot [--data-dir DIR] [--out docs/playground.png]

Serves a fresh data directory (`kiln models init` builds the tiny models in it, about a minute)
or DIR, generates three images with `kiln:shapes@1` in headless chromium and screenshots the page.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.browser.harness import chromium, connect, kiln, kiln_serve, missing_browser

API_KEY = "playground-screenshot"
PROMPT = "a yellow circle on a blue background"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="a data directory whose models are registered")
    parser.add_argument("--out", type=Path, default=Path("docs/playground.png"))
    args = parser.parse_args()
    if (reason := missing_browser()) is not None:
        parser.error(reason)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        if args.data_dir is None:
            kiln(data_dir, "models", "init")
        with kiln_serve(data_dir, API_KEY, Path(tmp) / "serve.log") as url, chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 880})
            page.goto(url)
            connect(page, API_KEY, "kiln:shapes@1")
            page.get_by_label("Prompt", exact=True).fill(PROMPT)
            page.get_by_label("Seed", exact=True).fill("1")
            page.get_by_label("Number of images", exact=True).fill("3")
            page.get_by_role("button", name="Generate", exact=True).click()
            page.get_by_role("img", name=PROMPT, exact=True).nth(2).wait_for(timeout=300_000)
            page.evaluate("window.scrollTo(0, 0)")  # Generate scrolled the page down
            page.screenshot(path=args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
