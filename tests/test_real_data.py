"""End to end on the real device photos in ../shared/data (skipped where that folder is missing)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ewaste_vision.cli import main

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def devices_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ewaste-devices"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found: real-data tests need ../shared/data beside the repository")
    run = tmp_path_factory.mktemp("devices") / "run"
    # Exactly the README's command: no flags beyond data, task and output.
    assert main(["train", str(folder), "--task", "classify", "--out", str(run)]) == 0
    return run


def test_default_training_reaches_the_promised_accuracy(devices_run: Path):
    metrics = json.loads((devices_run / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.97, metrics["accuracy"]
    assert metrics["accuracy"] > metrics["baseline_accuracy"] + 0.5


def test_known_duplicates_never_cross_the_split(devices_run: Path, shared_data: Path):
    with (devices_run / "split.csv").open() as handle:
        split_of = {Path(row["path"]).resolve(): row["split"] for row in csv.DictReader(handle)}
    files_by_md5: dict[str, list[Path]] = {}
    with (shared_data / "ewaste-devices" / "exact_duplicates.csv").open() as handle:
        for row in csv.DictReader(handle):
            path = (shared_data / "ewaste-devices" / "images" / row["file"]).resolve()
            files_by_md5.setdefault(row["md5"], []).append(path)
    assert files_by_md5
    for copies in files_by_md5.values():
        assert len({split_of[p] for p in copies}) == 1, copies


def test_evaluate_and_predict_on_the_trained_run(devices_run: Path, shared_data: Path, tmp_path: Path):
    assert main(["evaluate", str(devices_run)]) == 0
    out = tmp_path / "predictions.json"
    assert (
        main(
            [
                "predict",
                str(devices_run),
                str(shared_data / "ewaste-devices" / "images" / "TV"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    predictions = json.loads(out.read_text())["predictions"]
    top_classes = [p["top"][0]["class"] for p in predictions]
    assert top_classes.count("TV") / len(top_classes) > 0.9
