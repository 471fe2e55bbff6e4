"""`ewaste serve`: the HTTP API of the app, called through gradio_client against a loopback server.

Three tiny runs (classify, multilabel, detect) are trained once for the module; one server over all
of them is launched on 127.0.0.1 with a low pixel limit, so oversize images are cheap to make.
"""

from __future__ import annotations

import csv
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ewaste_vision.data.synth import COMPONENT_CLASSES, write_component_crops, write_synthetic_boards
from ewaste_vision.data.synth_xray import write_synthetic_xray_boards

gradio_client = pytest.importorskip("gradio_client")
pytest.importorskip("gradio")

from ewaste_vision.app.limits import ServeLimits  # noqa: E402
from ewaste_vision.app.server import ServedApp, create_app  # noqa: E402

MAX_PIXELS = 20_000
"""The test server's pixel limit: a 128 px board (16,384 px) passes, a 200 px image does not."""

MAX_BYTES = 150_000
"""The test server's upload limit: the test images are a few kB, a 300 px noise PNG is 270 kB."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("app-data")
    return {
        "crops": write_component_crops(root / "crops", n_per_class=6, seed=1, size=64),
        "boards": write_synthetic_boards(root / "boards", n=16, seed=2, size=128).parent,
        "xray": write_synthetic_xray_boards(root / "xray", 16, seed=1, size=96).parent,
    }


@pytest.fixture(scope="module")
def runs(
    data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, train_tiny_runs: Any
) -> dict[str, Path]:
    return train_tiny_runs(tmp_path_factory.mktemp("app-runs"), data, head_epochs=2)


@pytest.fixture(scope="module")
def served(runs: dict[str, Path]) -> Iterator[tuple[ServedApp, Any]]:
    limits = ServeLimits(max_pixels=MAX_PIXELS, max_file_bytes=MAX_BYTES, max_zip_members=8)
    app = create_app(list(runs.values()), limits)
    url = app.launch("127.0.0.1", port=None, block=False, quiet=True)
    try:
        yield app, gradio_client.Client(url, verbose=False)
    finally:
        app.close()


@pytest.fixture
def client(served: tuple[ServedApp, Any]) -> Any:
    return served[1]


def _crop(data: dict[str, Path], index: int = 0) -> Path:
    return sorted(data["crops"].rglob("*.jpg"))[index]


def _board(data: dict[str, Path], index: int = 0) -> Path:
    return sorted((data["boards"] / "test" / "images").iterdir())[index]


def _files(*paths: Path) -> list[Any]:
    return [gradio_client.handle_file(str(path)) for path in paths]


def _assert_safe(result: dict[str, Any]) -> None:
    """No server folder, temp path or traceback anywhere in a result."""
    text = json.dumps(result)
    for leak in ("/tmp", "Traceback", str(Path.home()), "site-packages"):
        assert leak not in text, text


def test_models_endpoint_describes_the_runs_from_their_metadata(client: Any):
    listed = client.predict(api_name="/models")
    models = {model["name"]: model for model in listed["models"]}
    assert {name: model["task"] for name, model in models.items()} == {
        "classify": "classify",
        "multilabel": "multilabel",
        "detect": "detect",
        "xray": "detect",
    }
    assert models["xray"]["modality"] == "xray" and models["detect"]["modality"] == "rgb"
    assert set(models["detect"]["class_names"]) == set(COMPONENT_CLASSES)
    assert models["classify"]["image_size"] == 64 and models["classify"]["backbone"] == "tiny"
    assert listed["limits"]["max_pixels"] == MAX_PIXELS
    assert listed["price_table"] == {"currency": "EUR", "date": "2023-04"}
    _assert_safe(listed)


def test_every_action_is_a_named_endpoint(client: Any):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/models", "/classify", "/multilabel", "/detect"} <= set(endpoints)


def test_classify_returns_probabilities_and_a_csv(client: Any, data: dict[str, Path]):
    result, table = client.predict("classify", _files(_crop(data, 0), _crop(data, 1)), api_name="/classify")
    assert {"model", "task", "images", "skipped"} <= set(result) and "error" not in result
    assert [image["file"] for image in result["images"]] == [_crop(data, 0).name, _crop(data, 1).name]
    for image in result["images"]:
        assert sum(image["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        assert image["top"][0]["probability"] == max(image["probabilities"].values())
    rows = list(csv.reader(Path(table).read_text().splitlines()))
    assert rows[0][:2] == ["file", "predicted"] and len(rows) == 3
    _assert_safe(result)


def test_multilabel_returns_components_and_one_heatmap_per_class_drawn(client: Any, data: dict[str, Path]):
    board = _board(data)
    result, gallery, _ = client.predict("multilabel", _files(board), "present", True, api_name="/multilabel")
    image = result["images"][0]
    assert {"file", "present", "probabilities", "heatmaps"} <= set(image) and result["shared_scale"] is True
    assert len(gallery) == len(image["heatmaps"]) >= 1
    for item in image["present"]:
        assert item["probability"] > item["threshold"]
    picked, gallery, _ = client.predict("multilabel", _files(board), "ic", False, api_name="/multilabel")
    assert picked["images"][0]["heatmaps"] == ["ic"] and len(gallery) == 1
    unknown, _, _ = client.predict("multilabel", _files(board), "toaster", False, api_name="/multilabel")
    assert "unknown class 'toaster'" in unknown["error"]


def test_detect_returns_boxes_value_interval_and_price_date(client: Any, data: dict[str, Path]):
    result, gallery, table = client.predict(
        "detect", _files(_board(data, 0), _board(data, 1)), api_name="/detect"
    )
    assert result["price_table"] == {"currency": "EUR", "date": "2023-04"}
    assert {"lot", "interval_note", "images", "skipped"} <= set(result)
    for image in result["images"]:
        assert {"file", "width", "height", "tiled", "detections", "counts", "value"} <= set(image)
        assert {"detected", "currency", "expected", "low", "high", "confidence"} <= set(image["value"])
        for box in image["detections"]:
            assert box["class"] in COMPONENT_CLASSES and len(box["box"]) == 4 and box["score"] > 0.5
    assert len(gallery) == 2
    assert Path(table).read_text().startswith("file,boxes,value_EUR")
    _assert_safe(result)


def test_a_non_image_upload_gets_a_one_line_message(client: Any, tmp_path: Path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    disguised = tmp_path / "photo.png"
    disguised.write_text("not a picture either")
    result, table = client.predict("classify", _files(notes, disguised), api_name="/classify")
    assert table is None and result["images"] == []
    assert result["error"].startswith("no usable image") and "\n" not in result["error"]
    reasons = {item["file"]: item["reason"] for item in result["skipped"]}
    assert "not an image file" in reasons["notes.txt"] and "photo.png" in reasons
    _assert_safe(result)


def test_an_image_over_the_pixel_limit_is_refused(client: Any, tmp_path: Path, data: dict[str, Path]):
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 200), "green").save(big)
    result, _ = client.predict("classify", _files(big, _crop(data)), api_name="/classify")
    assert [image["file"] for image in result["images"]] == [_crop(data).name]
    assert "over this server's limit of 20000 pixels" in result["skipped"][0]["reason"]


def test_an_upload_over_the_size_limit_is_refused_by_the_server(client: Any, tmp_path: Path):
    import httpx

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(noise)
    assert noise.stat().st_size > MAX_BYTES
    with noise.open("rb") as handle:  # straight to the upload route, past the client's own check
        response = httpx.post(f"{client.src}gradio_api/upload", files={"files": handle}, timeout=30)
    assert response.status_code == 413
    with pytest.raises(ValueError, match="maximum file size"):
        client.predict("classify", _files(noise), api_name="/classify")


def test_a_zip_is_a_batch_with_bounded_safe_members(client: Any, tmp_path: Path, data: dict[str, Path]):
    archive = tmp_path / "lot.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.write(_crop(data, 0), "a/one.jpg")
        handle.write(_crop(data, 1), "two.jpg")
        handle.writestr("../escape.jpg", _crop(data, 2).read_bytes())
        handle.writestr("readme.txt", "hello")
    result, table = client.predict("classify", _files(archive), api_name="/classify")
    assert [image["file"] for image in result["images"]] == ["lot.zip/a/one.jpg", "lot.zip/two.jpg"]
    reasons = {item["file"]: item["reason"] for item in result["skipped"]}
    assert "outside the zip" in reasons["lot.zip/../escape.jpg"] and "readme.txt" in str(reasons)
    assert len(Path(table).read_text().splitlines()) == 3
    crowded = tmp_path / "crowded.zip"
    with zipfile.ZipFile(crowded, "w") as handle:
        for number in range(9):
            handle.writestr(f"{number}.jpg", b"x")
    refused, _ = client.predict("classify", _files(crowded), api_name="/classify")
    assert "at most 8" in refused["error"]


def test_returned_images_carry_no_exif(client: Any, tmp_path: Path, data: dict[str, Path]):
    photo = tmp_path / "gps.jpg"
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 0.0)}  # GPS IFD: latitude
    Image.open(_board(data)).convert("RGB").save(photo, exif=exif)
    assert Image.open(photo).getexif()  # the input does carry EXIF
    _, boards, _ = client.predict("detect", _files(photo), api_name="/detect")
    _, overlays, _ = client.predict("multilabel", _files(photo), "all", False, api_name="/multilabel")
    for item in [*boards, *overlays]:
        with Image.open(item["image"]) as returned:
            assert not returned.getexif() and "exif" not in returned.info


def test_concurrent_requests_each_get_their_own_results(client: Any, data: dict[str, Path]):
    jobs = [client.submit("classify", _files(_crop(data, i)), api_name="/classify") for i in range(4)]
    results = [job.result(timeout=120)[0] for job in jobs]
    assert [r["images"][0]["file"] for r in results] == [_crop(data, i).name for i in range(4)]


def test_an_unknown_model_is_named_without_failing_the_server(client: Any, data: dict[str, Path]):
    result, _ = client.predict("nope", _files(_crop(data)), api_name="/classify")
    assert "no classify model 'nope'" in result["error"] and "classify" in result["error"]
    again, _ = client.predict("classify", _files(_crop(data)), api_name="/classify")
    assert "error" not in again


def test_sixteen_bit_scans_are_taken_as_files(client: Any, tmp_path: Path):
    scan = tmp_path / "scan16.png"
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(scan)
    assert Image.open(scan).mode.startswith("I")
    result, _ = client.predict("classify", _files(scan), api_name="/classify")
    assert result["images"][0]["file"] == "scan16.png"


def test_dual_energy_scans_are_read_at_16_bits_and_pairs_count_once(
    client: Any, tmp_path: Path, data: dict[str, Path]
):
    import tifffile

    scan = sorted((data["xray"] / "test" / "images").iterdir())[0]
    high_low = tifffile.imread(scan)  # [2, H, W] uint16
    assert high_low.dtype == np.uint16
    for energy, pixels in zip(("high", "low"), high_low, strict=True):
        Image.fromarray(pixels).save(tmp_path / f"pair.{energy}.png")  # 16-bit PNGs
    files = _files(scan, tmp_path / "pair.high.png", tmp_path / "pair.low.png")
    result, gallery, _ = client.predict("xray", files, api_name="/detect")
    assert [image["file"] for image in result["images"]] == [scan.name, "pair.high.png"]
    assert result["skipped"] == [] and len(gallery) == 2
    lone, _, _ = client.predict("xray", _files(tmp_path / "pair.low.png"), api_name="/detect")
    assert "partner" in lone["error"] and "pair.low.png" in lone["error"]
    _assert_safe(lone)


def test_page_components_have_ids_for_browser_tests(served: tuple[ServedApp, Any]):
    ids = {getattr(block, "elem_id", None) for block in served[0].page.blocks.values()}
    for task in ("classify", "multilabel", "detect"):
        for part in ("model", "files", "run", "status", "table", "json", "csv"):
            assert f"{task}-{part}" in ids, f"{task}-{part}"
    assert {"multilabel-classes", "multilabel-shared-scale", "multilabel-gallery", "detect-gallery"} <= ids
