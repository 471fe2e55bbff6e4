"""`ewaste serve` in a real browser: Playwright drives Debian's headless Chromium against a loopback server.

Three tiny runs (classify, multilabel, detect) are trained once for the module and served on
127.0.0.1; one browser page per test uploads files through the page's file inputs and waits for the
results to render. Skipped with a message where `/usr/bin/chromium` or Playwright is missing, except
under `CI=true`, where that fails the module (`.ci/run` installs both and stops if it cannot).
Playwright's own browser download is never used: this runs offline.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ewaste_vision.app.browser import CHROMIUM, launch_chromium
from ewaste_vision.data.synth import COMPONENT_CLASSES, write_component_crops, write_synthetic_boards

pytestmark = pytest.mark.browser

WAIT_MS = 60_000
"""How long a page waits for a result: a model call on a busy two-core machine takes seconds."""

TAB_TITLES = {"classify": "Classify", "multilabel": "Components", "detect": "Detect and value"}
"""The tab titles of `ewaste_vision.app.page`, as a person (and the accessibility tree) sees them."""

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
"""Under CI the app must be opened: a missing browser fails the run instead of skipping it."""

if not CHROMIUM.is_file():
    _missing = f"{CHROMIUM} not found: browser tests need Debian's Chromium (apt-get install -y chromium)"
    if IN_CI:
        pytest.fail(f"CI=true and {_missing}", pytrace=False)
    pytest.skip(_missing, allow_module_level=True)
try:
    from playwright import sync_api
except ImportError:
    if IN_CI:
        pytest.fail("CI=true and Playwright is missing (pip install -e '.[dev]')", pytrace=False)
    pytest.skip("browser tests need Playwright (pip install -e '.[dev]')", allow_module_level=True)
pytest.importorskip("gradio")

from ewaste_vision.app.limits import ServeLimits  # noqa: E402
from ewaste_vision.app.server import create_app  # noqa: E402

expect = sync_api.expect


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("browser-data")
    return {
        "crops": write_component_crops(root / "crops", n_per_class=4, seed=1, size=64),
        "boards": write_synthetic_boards(root / "boards", n=12, seed=2, size=128).parent,
    }


@pytest.fixture(scope="module")
def url(
    data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, train_tiny_runs: Any
) -> Iterator[str]:
    """A server over a tiny run of each task on a free loopback port."""
    runs = train_tiny_runs(tmp_path_factory.mktemp("browser-runs"), data, head_epochs=1)
    app = create_app(list(runs.values()), ServeLimits(max_pixels=50_000))
    address = app.launch("127.0.0.1", port=None, block=False, quiet=True)
    try:
        yield address
    finally:
        app.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        expect.set_options(timeout=WAIT_MS)  # assertions wait 5 s by default: too short for a model call
        try:
            yield chromium
        finally:
            expect.set_options(timeout=5_000)
            chromium.close()


@pytest.fixture
def page(browser: Any, url: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    try:
        yield page
    finally:
        context.close()


def _upload_and_run(page: Any, task: str, *paths: Path) -> None:
    """Open the task's tab, put `paths` into its file input, wait for the upload, and press run."""
    page.get_by_role("tab", name=TAB_TITLES[task]).click()
    files = page.locator(f"#{task}-files")
    files.locator("input[type=file]").set_input_files([str(path) for path in paths])
    for path in paths:  # the file list shows each name once its upload has finished
        expect(files).to_contain_text(path.stem)
    page.locator(f"#{task}-run").click()


def _board(data: dict[str, Path], index: int = 0) -> Path:
    return sorted((data["boards"] / "test" / "images").iterdir())[index]


def test_classify_shows_the_predicted_class(page: Any, data: dict[str, Path]):
    crop = sorted(data["crops"].rglob("*.jpg"))[0]
    _upload_and_run(page, "classify", crop)
    expect(page.locator("#classify-status")).to_contain_text("Classified 1 image(s)")
    table = page.locator("#classify-table")
    expect(table).to_contain_text(crop.name)
    classes = "|".join(sorted(COMPONENT_CLASSES, key=len, reverse=True))
    expect(table).to_contain_text(re.compile(rf"\b({classes}) \(\d\.\d\d\)"))


def test_components_show_a_heatmap(page: Any, data: dict[str, Path]):
    board = _board(data)
    _upload_and_run(page, "multilabel", board)
    expect(page.locator("#multilabel-status")).to_contain_text("Components in 1 image(s)")
    heatmaps = page.locator("#multilabel-gallery img")
    expect(heatmaps.first).to_be_visible()
    assert heatmaps.first.evaluate("image => image.complete && image.naturalWidth > 0")
    expect(page.locator("#multilabel-table")).to_contain_text(board.name)


def test_detect_shows_the_value(page: Any, data: dict[str, Path]):
    _upload_and_run(page, "detect", _board(data, 0))
    status = page.locator("#detect-status")
    expect(status).to_contain_text(re.compile(r"detected value \d+\.\d\d EUR"))
    expect(status).to_contain_text("prices of 2023-04")
    expect(page.locator("#detect-gallery img").first).to_be_visible()
    expect(page.locator("#detect-table")).to_contain_text(_board(data, 0).name)


def test_a_non_image_gets_a_clear_message_without_internals(page: Any, tmp_path: Path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    _upload_and_run(page, "classify", notes)
    status = page.locator("#classify-status")
    expect(status).to_contain_text("Could not process: no usable image")
    expect(status).to_contain_text("notes.txt: not an image file")
    assert len(status.inner_text().strip().splitlines()) == 1
    shown = page.locator("body").inner_text()
    for leak in ("Traceback", str(tmp_path), "/tmp/", str(Path.home()), "site-packages"):
        assert leak not in shown, leak
    expect(page.locator("#classify-table")).not_to_contain_text("notes.txt")
