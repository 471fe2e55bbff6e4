"""Multi-label end to end on synthetic boards with YOLO labels: train, evaluate, explain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ewaste_vision.cli import main
from ewaste_vision.data.synth import COMPONENT_CLASSES, write_synthetic_boards


@pytest.fixture(scope="module")
def board_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = write_synthetic_boards(tmp_path_factory.mktemp("boards"), n=40, seed=2, size=128).parent
    run = tmp_path_factory.mktemp("runs") / "boards"
    args = [
        "train",
        str(data),
        "--task",
        "multilabel",
        "--out",
        str(run),
        "--backbone",
        "tiny",
        "--image-size",
        "64",
        "--head-epochs",
        "2",
        "--loss",
        "asl",
    ]
    assert main(args) == 0
    return run


def test_multilabel_run_has_its_metrics_thresholds_and_heatmap_scores(board_run: Path):
    metrics = json.loads((board_run / "metrics.json").read_text())
    for key in (
        "micro_f1",
        "macro_f1",
        "per_class",
        "map",
        "baseline_micro_f1",
        "cam_pointing",
        "cam_energy_in_box",
        "cam_road",
    ):
        assert key in metrics, key
    assert set(metrics["per_class"]) == set(COMPONENT_CLASSES)
    for scores in metrics["cam_pointing"].values():
        assert 0 <= scores["cam"] <= 1 and 0 <= scores["centre_baseline"] <= 1 and scores["n"] > 0
    meta = torch.load(board_run / "model.pt", weights_only=True)["meta"]
    thresholds = meta["extra"]["thresholds"]
    assert len(thresholds) == len(COMPONENT_CLASSES) and all(0 < t < 1 for t in thresholds)
    report = (board_run / "report.md").read_text()
    assert "micro-F1" in report and "pointing game" in report
    assert (board_run / "plots" / "per_class_confusion.png").is_file()


def test_split_file_keeps_the_labels_for_re_evaluation(board_run: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["evaluate", str(board_run)]) == 0
    assert "micro-F1" in capsys.readouterr().out


def test_explain_writes_panels_for_the_top_classes(board_run: Path, tmp_path: Path):
    images = sorted((board_run.parent.parent / "boards0" / "test" / "images").glob("*.jpg"))
    if not images:  # the data folder is a sibling temp dir; find it through split.csv instead
        import csv

        with (board_run / "split.csv").open() as handle:
            images = [Path(r["path"]) for r in csv.DictReader(handle) if r["split"] == "test"]
    out = tmp_path / "heatmaps"
    assert main(["explain", str(board_run), str(images[0]), "--out", str(out), "--shared-scale"]) == 0
    written = list(out.rglob("*.png"))
    assert any(p.name == "panel.png" for p in written)
    assert 2 <= len(written) <= 3  # the panel plus one or two classes (top-2 above threshold, else top-1)
