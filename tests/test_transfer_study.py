"""`ewaste transfer`: 003's Table 1 end to end on synthetic crops with the tiny network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ewaste_vision.cli import main
from ewaste_vision.data.synth import write_component_crops
from ewaste_vision.models.classifier import build_classifier
from ewaste_vision.models.registry import get_backbone_spec
from ewaste_vision.runs import ModelMeta, read_model_file, save_model
from ewaste_vision.transfer.study import StudyRow, StudySettings, row_title, run_transfer_study

ROWS = [
    StudyRow("", "scratch", "full"),
    StudyRow("", "source", "linear"),
    StudyRow("resnet18", "imagenet", "linear"),  # no weights offline: reported, not trained
]
SETTINGS = StudySettings(max_epochs=1, head_epochs=2, batch_size=16, image_size=32, patience=1)


def _source_run(run_dir: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    model, _ = build_classifier("tiny", 2, pretrained=False)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    spec = get_backbone_spec("tiny")
    save_model(run_dir, state, ModelMeta("classify", ["a", "b"], "tiny", 32, spec.mean, spec.std))
    return state


def test_the_study_trains_every_row_on_one_split_and_writes_table_1(tmp_path: Path):
    crops = write_component_crops(tmp_path / "crops", n_per_class=8, seed=2, size=40)
    source_state = _source_run(tmp_path / "source")
    out = tmp_path / "study"
    results, report = run_transfer_study(tmp_path / "source", crops, out, ROWS, SETTINGS, isolate=False)

    scratch, transferred, imagenet = results
    assert imagenet.skipped.startswith("untrained: no offline ImageNet weights") and imagenet.accuracy is None
    for result in (scratch, transferred):
        assert result.accuracy is not None and result.baseline_accuracy is not None
        low, high = result.accuracy_ci95
        assert 0 <= low <= result.accuracy <= high <= 1
        assert result.n_test > 0 and result.seconds is not None and result.seconds > 0
        assert result.peak_rss_mib is None or result.peak_rss_mib > 10
        assert result.epochs >= 1
    assert scratch.test_split_digest == transferred.test_split_digest
    # The transferred row's frozen backbone is the source run's, tensor for tensor.
    after, _ = read_model_file(Path(transferred.run_dir) / "model.pt")
    backbone = {k: v for k, v in source_state.items() if k.startswith("backbone.")}
    assert all(torch.equal(after[k], v) for k, v in backbone.items())
    assert transferred.weights == f"run {tmp_path / 'source'}" and scratch.weights.startswith("untrained")

    text = report.read_text()
    for result in results:
        assert row_title(result.row, result.backbone) in text
    assert "95% CI" in text and "majority baseline" in text and "peak memory" in text
    assert (out / "learning_curves.png").stat().st_size > 1000
    saved = json.loads((out / "transfer.json").read_text())
    assert [r["accuracy"] for r in saved["rows"]] == [r.accuracy for r in results]

    # Run again: finished rows are read back, not retrained.
    stamp = (Path(scratch.run_dir) / "model.pt").stat().st_mtime_ns
    again, _ = run_transfer_study(tmp_path / "source", crops, out, ROWS, SETTINGS, isolate=False)
    assert [r.accuracy for r in again] == [r.accuracy for r in results]
    assert (Path(scratch.run_dir) / "model.pt").stat().st_mtime_ns == stamp


def test_transfer_without_a_finished_source_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    (tmp_path / "empty").mkdir()
    assert main(["transfer", str(tmp_path / "empty"), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "empty") in err and "model.pt" in err


def test_transfer_patience_below_one_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    args = ["transfer", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o"), "--patience", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--patience" in err
    assert not (tmp_path / "o").exists()
