"""Debian's headless Chromium, driven by Playwright, for the app's browser tests and screenshots.

Playwright's own browser download is never used, so this works offline. Playwright is imported by
the caller (`playwright.sync_api.sync_playwright`); this module imports neither it nor Gradio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium (`apt-get install chromium`); Playwright's downloaded browsers are not used."""

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium phones home at start, and a closed network refuses it.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Command-line flags of the headless Chromium: no GPU, no sandbox, no network of its own."""


def launch_chromium(playwright: Any) -> Any:
    """Launch Debian's Chromium headless through a started Playwright.

    Args:
        playwright: what `sync_playwright()` yields.

    Returns:
        The Playwright `Browser`; the caller closes it.

    Raises:
        FileNotFoundError: Chromium is not at /usr/bin/chromium.
    """
    if not CHROMIUM.is_file():
        raise FileNotFoundError(f"{CHROMIUM} not found: install Debian's Chromium (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
