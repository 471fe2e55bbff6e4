"""Detection end to end on synthetic boards: train, evaluate, resume, value a lot; and the pieces."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from torchvision import tv_tensors

from ewaste_vision.cli import main
from ewaste_vision.config import TrainConfig
from ewaste_vision.data.records import ObjectBox
from ewaste_vision.data.synth import COMPONENT_CLASSES, write_synthetic_boards
from ewaste_vision.detect.box_classifier import GAMMA_GRID
from ewaste_vision.detect.data import board_augmentation, boxes_to_pixels
from ewaste_vision.detect.model import build_detector
from ewaste_vision.detect.predictor import Detector
from ewaste_vision.models.registry import available_backbones
from ewaste_vision.tasks import get_task

TINY = [
    "--backbone",
    "tiny",
    "--no-pretrained",
    "--image-size",
    "96",
    "--max-epochs",
    "2",
    "--batch-size",
    "4",
]


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = write_synthetic_boards(tmp_path_factory.mktemp("boards"), n=24, seed=3, size=128).parent
    run = tmp_path_factory.mktemp("runs") / "detect"
    assert main(["train", str(data), "--task", "detect", "--out", str(run), *TINY]) == 0
    return run


def test_detect_run_writes_001_metrics_report_and_model(detect_run: Path):
    metrics = json.loads((detect_run / "metrics.json").read_text())
    for key in ("map50", "map50_95", "per_class", "precision", "recall", "f1"):
        assert key in metrics, key
    assert set(metrics["per_class"]) == set(COMPONENT_CLASSES)
    for values in metrics["per_class"].values():
        assert {"precision", "recall", "f1", "tp", "fp", "fn"} <= set(values)
    meta = torch.load(detect_run / "model.pt", weights_only=True)["meta"]
    assert meta["task"] == "detect" and meta["extra"]["detector_size"] == "n"
    # With a box classifier the run detects at its training size alone.
    assert meta["extra"]["detect_sizes"] == [96]
    # The box classifier is trained by default, stored beside the detector, gamma fitted.
    box_settings = meta["extra"]["box_classifier"]
    assert box_settings["gamma"] in GAMMA_GRID
    assert len(box_settings["class_gammas"]) == len(COMPONENT_CLASSES)
    assert set(box_settings["class_gammas"]) <= set(GAMMA_GRID)
    state = torch.load(detect_run / "model.pt", weights_only=True)["state_dict"]
    assert any(key.startswith("box_classifier.") for key in state)
    assert Detector.from_run(detect_run).box_classifier is not None
    report = (detect_run / "report.md").read_text()
    assert "Box classifier" in report and "px crops of boxes" in report
    assert "mAP@0.5" in report and (detect_run / "plots" / "detections_0.jpg").is_file()
    config = (detect_run / "config.yaml").read_text()
    assert "strategy: full" in config  # the task's default filled the `auto` setting


def test_detect_run_resumes_from_its_last_checkpoint(detect_run: Path, tmp_path: Path):
    resumed = tmp_path / "resumed"
    shutil.copytree(detect_run, resumed)
    data = yaml.safe_load((resumed / "config.yaml").read_text())["data"]
    assert (
        main(["train", data, "--task", "detect", "--out", str(resumed), "--resume", "--max-epochs", "3"]) == 0
    )
    rows = list(csv.DictReader((resumed / "logs" / "metrics.csv").open()))
    epochs = {int(row["epoch"]) for row in rows if row.get("val_map50")}
    assert epochs == {0, 1, 2}  # two epochs from the first run are kept, one more was trained


def test_a_run_without_the_box_classifier_detects_with_the_detector_alone(tmp_path: Path):
    data = write_synthetic_boards(tmp_path / "boards", n=8, seed=5, size=96).parent
    run = tmp_path / "run"
    args = ["train", str(data), "--task", "detect", "--out", str(run), *TINY, "--no-box-classifier"]
    assert main([*args, "--max-epochs", "1", "--image-size", "64"]) == 0
    extra = torch.load(run / "model.pt", weights_only=True)["meta"]["extra"]
    assert "box_classifier" not in extra and Detector.from_run(run).box_classifier is None
    # 96 px boards under a 64 px input: the native size was a candidate, chosen on validation.
    assert extra["detect_sizes"] in ([64], [64, 96])
    report = (run / "report.md").read_text()
    assert "Validation map50 by sizes" in report and "64+96" in report


def test_value_command_writes_a_lot_report(detect_run: Path, tmp_path: Path):
    images = next(detect_run.parent.parent.glob("boards*/test/images"))
    out = tmp_path / "lot"
    assert main(["value", str(detect_run), str(images), "--out", str(out)]) == 0
    rows = (out / "lot_values.csv").read_text().splitlines()
    assert rows[0].startswith("image,") and len(rows) == 1 + len(list(images.iterdir()))
    report = (out / "value_report.md").read_text()
    assert "EUR" in report and "2023-04" in report  # the price table's currency and date


def test_value_needs_a_detect_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["value", str(tmp_path / "missing"), str(tmp_path), "--out", str(tmp_path / "o")]) != 0
    assert "run directory not found" in capsys.readouterr().err


def test_box_classifier_settings_that_miss_classes_are_a_one_line_error(
    detect_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    edited = tmp_path / "edited"
    shutil.copytree(detect_run, edited, ignore=shutil.ignore_patterns("checkpoints"))
    saved = torch.load(edited / "model.pt", weights_only=True)
    saved["meta"]["extra"]["box_classifier"]["class_gammas"] = [0.7, 0.7]
    classes = len(saved["meta"]["class_names"])
    torch.save(saved, edited / "model.pt")
    images = next(detect_run.parent.parent.glob("boards*/test/images"))
    assert main(["value", str(edited), str(images), "--out", str(tmp_path / "lot")]) != 0
    error = capsys.readouterr().err
    assert f"2 box-classifier exponents for {classes} classes" in error and "model.pt" in error
    assert "Traceback" not in error


def test_detect_rejects_a_class_folder_dataset(tmp_path: Path, make_image, capsys):
    for index in range(4):
        make_image(tmp_path / "data" / "a" / f"{index}.png", index)
    code = main(["train", str(tmp_path / "data"), "--task", "detect", "--out", str(tmp_path / "r"), *TINY])
    assert code != 0 and "YOLO dataset" in capsys.readouterr().err


def test_quarter_turns_and_flips_move_boxes_with_the_pixels():
    torch.manual_seed(0)
    size = 64
    augment = board_augmentation(size)
    for _ in range(12):
        image = torch.zeros(3, size, size, dtype=torch.uint8)
        image[:, 8:20, 30:50] = 255  # one white part at x 30..50, y 8..20
        target = boxes_to_pixels([ObjectBox(0, 40 / size, 14 / size, 20 / size, 12 / size)], size, size)
        sample = augment(
            {
                "image": tv_tensors.Image(image),
                "boxes": tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(size, size)),
                "labels": target["labels"],
            }
        )
        boxes = sample["boxes"]
        assert len(boxes) == 1
        x0, y0, x1, y1 = (round(float(v)) for v in boxes[0])
        inside = sample["image"][0, y0:y1, x0:x1].float()
        # Colour jitter changes the level, not where the part is: the box holds the bright pixels.
        assert inside.mean() > sample["image"][0].float().mean() * 2


def test_every_registered_backbone_can_detect():
    for name in available_backbones():
        detector, _ = build_detector(name, 3, "n", 96, pretrained=False)
        detector.eval()
        with torch.no_grad():
            found = detector([torch.rand(3, 96, 120)])
        assert set(found[0]) == {"boxes", "scores", "labels"}


@pytest.mark.parametrize("strategy", ["full", "finetune", "linear"])
def test_detector_strategies_freeze_what_they_say(strategy: str):
    from ewaste_vision.models.classifier import set_backbone_trainable

    detector, _ = build_detector("efficientnet_lite0", 3, "n", 96, pretrained=False)
    set_backbone_trainable(detector.backbone.body, "efficientnet_lite0", strategy, freeze_early=True)
    flags = {n: p.requires_grad for n, p in detector.backbone.body.named_parameters()}
    stem_and_first = ("body.conv_stem.", "body.blocks.0.", "body.blocks.1.")
    early = [v for n, v in flags.items() if n.startswith(stem_and_first)]
    last = [v for n, v in flags.items() if n.startswith("body.blocks.6.")]
    middle = [v for n, v in flags.items() if n.startswith("body.blocks.3.")]
    assert early and not any(early)  # never trained: the costly full-resolution stages
    assert all(last) == (strategy != "linear") and all(middle) == (strategy == "full")
    assert all(p.requires_grad for p in detector.head.parameters())


def test_an_untrained_detector_backbone_trains_whole():
    from ewaste_vision.models.classifier import set_backbone_trainable

    detector, _ = build_detector("tiny", 3, "n", 64, pretrained=False)
    set_backbone_trainable(detector.backbone.body, "tiny", "full", freeze_early=False)
    assert all(p.requires_grad for p in detector.backbone.body.parameters())


def test_task_defaults_fill_only_auto_settings():
    detect = get_task("detect")
    config = TrainConfig(task="detect", batch_size=2).with_task_defaults(detect.defaults)
    assert config.strategy == "full" and config.batch_size == 2 and config.image_size == 448
    classify = TrainConfig().with_task_defaults(get_task("classify").defaults)
    assert classify.strategy == "linear" and classify.batch_size == 32 and classify.lr == 1e-3
    assert classify.head_warmup is True


def test_a_head_warmup_switched_off_is_not_taken_for_auto():
    multilabel = get_task("multilabel").defaults
    assert TrainConfig(task="multilabel").with_task_defaults(multilabel).head_warmup is False
    classify = get_task("classify").defaults
    assert TrainConfig(head_warmup=False).with_task_defaults(classify).head_warmup is False


def test_detector_trains_on_dual_energy_xray_scans(tmp_path: Path):
    from ewaste_vision.data.synth_xray import write_synthetic_xray_boards

    data = write_synthetic_xray_boards(tmp_path / "xray", 16, seed=1, size=96).parent
    run = tmp_path / "run"
    assert main(["train", str(data), "--task", "detect", "--out", str(run), *TINY]) == 0
    detector = Detector.from_run(run)
    assert detector.modality == "xray"
    scan = next((data / "test" / "images").iterdir())
    image = detector.load(scan)
    assert image.dtype == torch.float32 and image.shape[0] == 3
    # 16-bit precision survives into the input: far more distinct levels than 8 bits could hold.
    assert torch.unique(image[0]).numel() > 256


def test_evaluate_command_scores_a_detect_run_and_its_lot_value(detect_run: Path, tmp_path: Path):
    copy = tmp_path / "again"
    shutil.copytree(detect_run, copy)
    assert main(["evaluate", str(copy)]) == 0
    value = json.loads((copy / "metrics.json").read_text())["value_vs_truth"]
    assert value["currency"] == "EUR" and value["lot_true"] >= 0
    assert value["corrected"]["rates_split"] == "val"
    assert "lot value from true boxes" in (copy / "report.md").read_text()


def test_value_against_truth_corrects_counts_with_rates_from_another_split():
    from ewaste_vision.data.records import ImageRecord
    from ewaste_vision.detect.evaluate import value_against_truth

    names = ["ic", "resistor"]
    box = [10.0, 10.0, 30.0, 30.0]
    # Each board shows one confident ic detection and truly holds two ics.
    predictions = [
        {"boxes": torch.tensor([box]), "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}
        for _ in range(3)
    ]
    truths = [{"boxes": torch.tensor([box, box]), "labels": torch.tensor([0, 0])} for _ in range(3)]
    records = [ImageRecord(Path(f"board{k}.jpg"), -1) for k in range(3)]
    # The other split found half the ics and never a wrong one: each count doubles.
    rates = {"ic": {"precision": 1.0, "recall": 0.5, "tp": 50, "fp": 0, "fn": 50}}
    value = value_against_truth(predictions, truths, records, names, rates)
    assert value["lot_relative_error"] == pytest.approx(-0.5)
    corrected = value["corrected"]
    assert corrected["lot_relative_error"] == pytest.approx(0.0, abs=1e-9)
    low, high = corrected["lot_interval"]
    assert low <= value["lot_true"] <= high and corrected["lot_true_inside_interval"]
    # Without rates for a detected valued class, the correction says why it is missing.
    assert "not_computed" in value_against_truth(predictions, truths, records, names, {})["corrected"]
