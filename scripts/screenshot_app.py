"""Screenshot of the operator app: serve runs on loopback, run one tab in headless Chromium, save a PNG.

    python scripts/screenshot_app.py RUN... --out docs/app.png --tab detect --upload board.jpg

Uses Debian's Chromium (`apt-get install chromium`) through Playwright (`pip install -e '.[dev]'`);
Playwright's own browser download is never used, so this works offline. The README's picture of
the app (`docs/app.png`) is made with it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ewaste_vision.app.browser import CHROMIUM, launch_chromium
from ewaste_vision.app.server import create_app

TAB_TITLES = {"classify": "Classify", "multilabel": "Components", "detect": "Detect and value"}


def screenshot_app(
    run_dirs: list[Path],
    out: Path,
    tab: str = "detect",
    uploads: tuple[Path, ...] = (),
    width: int = 1280,
    timeout_s: float = 120.0,
) -> Path:
    """Serve `run_dirs` on 127.0.0.1, run `tab` on `uploads` (if any), and save a full-page PNG.

    Args:
        run_dirs: runs made by `ewaste train`; `tab` needs one of its task.
        out: PNG file to write (its folder is made).
        tab: `classify`, `multilabel` or `detect`: the tab shown.
        uploads: files put into the tab's upload box before pressing its button; none shows it empty.
        width: viewport width in pixels (the height follows the page).
        timeout_s: longest wait for the upload and for the result.

    Raises:
        FileNotFoundError: Chromium is not at /usr/bin/chromium.
        ValueError: `tab` is not a task name.
    """
    from playwright.sync_api import expect, sync_playwright

    if not CHROMIUM.is_file():
        raise FileNotFoundError(f"{CHROMIUM} not found: install Debian's Chromium (apt-get install chromium)")
    if tab not in TAB_TITLES:
        raise ValueError(f"unknown tab {tab!r}; choose one of: {', '.join(TAB_TITLES)}")
    app = create_app(run_dirs)
    url = app.launch("127.0.0.1", port=None, block=False, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.set_default_timeout(timeout_s * 1000)
            page.goto(url)
            page.get_by_role("tab", name=TAB_TITLES[tab]).click()
            if uploads:
                files = page.locator(f"#{tab}-files")
                files.locator("input[type=file]").set_input_files([str(path) for path in uploads])
                for path in uploads:
                    expect(files).to_contain_text(path.stem, timeout=timeout_s * 1000)
                page.locator(f"#{tab}-run").click()
                expect(page.locator(f"#{tab}-status")).not_to_be_empty(timeout=timeout_s * 1000)
                gallery = page.locator(f"#{tab}-gallery img")
                if tab != "classify" and gallery.count():
                    expect(gallery.first).to_be_visible()
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        app.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories to serve")
    parser.add_argument("--out", type=Path, default=Path("docs/app.png"), help="PNG to write")
    parser.add_argument("--tab", choices=sorted(TAB_TITLES), default="detect", help="tab to show")
    parser.add_argument("--upload", type=Path, nargs="*", default=[], help="files to run the tab on")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in pixels")
    args = parser.parse_args(argv)
    written = screenshot_app(args.runs, args.out, args.tab, tuple(args.upload), args.width)
    print(written, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
