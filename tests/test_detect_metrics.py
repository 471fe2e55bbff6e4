"""Detection metrics on hand-made boxes whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.detection import MeanAveragePrecision

from ewaste_vision.detect.metrics import (
    DetectionPrediction,
    DetectionTarget,
    count_matches,
    detection_metrics,
    match_detections,
    summarise_repeats,
)

CLASSES = ["IC", "TC", "C"]


def pred(boxes: list[list[float]], scores: list[float], labels: list[int]) -> DetectionPrediction:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


def target(boxes: list[list[float]], labels: list[int]) -> DetectionTarget:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


def test_perfect_predictions_score_one_and_absent_class_is_none():
    truth = [
        target([[0, 0, 10, 10], [20, 20, 40, 30]], [0, 1]),
        target([[5, 5, 50, 50]], [0]),
    ]
    preds = [
        pred([[0, 0, 10, 10], [20, 20, 40, 30]], [0.9, 0.8], [0, 1]),
        pred([[5, 5, 50, 50]], [0.7], [0]),
    ]
    metrics = detection_metrics(preds, truth, CLASSES)
    assert metrics["n_images"] == 2
    assert (metrics["tp"], metrics["fp"], metrics["fn"]) == (3, 0, 0)
    assert metrics["precision"] == metrics["recall"] == metrics["f1"] == 1.0
    assert metrics["map50"] == pytest.approx(1.0)
    assert metrics["map50_95"] == pytest.approx(1.0)
    assert metrics["per_class"]["IC"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "tp": 2,
        "fp": 0,
        "fn": 0,
        "ap50": 1.0,
        "ap50_95": 1.0,
    }
    absent = metrics["per_class"]["C"]
    assert absent["precision"] is absent["recall"] is absent["f1"] is None
    assert absent["ap50"] is None and absent["ap50_95"] is None
    assert (absent["tp"], absent["fp"], absent["fn"]) == (0, 0, 0)
    assert metrics["macro_f1"] == 1.0  # the absent class is left out, not averaged in as 0


def test_wrong_class_is_a_false_positive_and_a_false_negative():
    truth = [target([[0, 0, 10, 10]], [0])]
    metrics = detection_metrics([pred([[0, 0, 10, 10]], [0.9], [1])], truth, CLASSES)
    assert (metrics["per_class"]["IC"]["tp"], metrics["per_class"]["IC"]["fn"]) == (0, 1)
    assert (metrics["per_class"]["TC"]["tp"], metrics["per_class"]["TC"]["fp"]) == (0, 1)
    assert metrics["per_class"]["IC"]["precision"] == 0.0  # ground truth but never predicted
    assert metrics["per_class"]["TC"]["recall"] == 0.0  # predicted but never present
    assert metrics["per_class"]["TC"]["ap50"] is None  # no ground truth: AP is undefined
    assert metrics["precision"] == metrics["recall"] == metrics["f1"] == 0.0
    assert metrics["map50"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("box", "is_tp"),
    [
        ([0, 0, 10, 20], False),  # IoU exactly 0.5: the study needs more than 50 %
        ([0, 0, 10, 22], False),  # IoU 0.45
        ([0, 0, 10, 18], True),  # IoU 0.56
    ],
)
def test_iou_must_exceed_half(box: list[float], is_tp: bool):
    counts = count_matches(pred([box], [0.9], [0]), target([[0, 0, 10, 10]], [0]), num_classes=3)
    assert counts[:, 0].tolist() == ([1, 0, 0] if is_tp else [0, 1, 1])


def test_confidence_of_exactly_half_is_not_counted_but_still_ranked_for_map():
    truth = [target([[0, 0, 10, 10]], [0])]
    at_half = detection_metrics([pred([[0, 0, 10, 10]], [0.5], [0])], truth, CLASSES)
    assert (at_half["tp"], at_half["fp"], at_half["fn"]) == (0, 0, 1)
    assert at_half["map50"] == pytest.approx(1.0)  # AP integrates over scores; no threshold there
    above = detection_metrics([pred([[0, 0, 10, 10]], [0.51], [0])], truth, CLASSES)
    assert (above["tp"], above["fp"], above["fn"]) == (1, 0, 0)


def test_two_predictions_on_one_object_give_one_tp_and_one_fp():
    metrics = detection_metrics(
        [pred([[0, 0, 10, 10], [0, 0, 10, 11]], [0.8, 0.9], [0, 0])], [target([[0, 0, 10, 10]], [0])], CLASSES
    )
    assert (metrics["tp"], metrics["fp"], metrics["fn"]) == (1, 1, 0)
    assert metrics["precision"] == 0.5 and metrics["recall"] == 1.0
    assert metrics["f1"] == pytest.approx(2 / 3)


def test_each_object_matched_once_by_highest_iou():
    # Both predictions overlap the first object most (IoU 0.82 and 0.74); the first, more
    # confident one takes it, and the second falls back to the other object (IoU 0.6) instead of
    # matching the first object a second time.
    truth = target([[0, 0, 10, 10], [4, 0, 14, 10]], [0, 0])
    detections = pred([[1, 0, 11, 10], [1.5, 0, 11.5, 10]], [0.9, 0.8], [0, 0])
    assert count_matches(detections, truth, num_classes=1)[:, 0].tolist() == [2, 0, 0]


def test_match_detections_marks_which_boxes_hit():
    # In score order: a hit, a second box on the same object (a miss), a box on nothing (a miss),
    # and a box on the second object (a hit).
    truth = torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32)
    boxes = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 11], [100, 100, 110, 110], [50, 50, 60, 61]], dtype=torch.float32
    )
    assert match_detections(boxes, truth).tolist() == [True, False, False, True]
    assert match_detections(boxes, truth[:0]).tolist() == [False] * 4
    assert match_detections(boxes[:0], truth).tolist() == []


def test_empty_images():
    nothing = detection_metrics([pred([], [], [])], [target([], [])], CLASSES)
    assert nothing["n_images"] == 1
    assert nothing["precision"] is nothing["recall"] is nothing["f1"] is None
    assert nothing["map50"] is None and nothing["map50_95"] is None
    assert all(scores["f1"] is None for scores in nothing["per_class"].values())

    mixed = detection_metrics(
        [pred([], [], []), pred([[0, 0, 10, 10]], [0.9], [2])],
        [target([], []), target([[0, 0, 10, 10]], [2])],
        CLASSES,
    )
    assert (mixed["tp"], mixed["fp"], mixed["fn"]) == (1, 0, 0)
    assert mixed["per_class"]["C"]["ap50"] == pytest.approx(1.0)


def test_map_matches_torchmetrics_below_its_detection_limit():
    generator = torch.Generator().manual_seed(0)
    preds, truth = [], []
    for _ in range(3):
        corners = torch.rand(20, 2, generator=generator) * 200
        boxes = torch.cat([corners, corners + 20], dim=1)  # [20, 4]
        labels = torch.randint(0, 3, (20,), generator=generator)
        jitter = torch.randn(20, 4, generator=generator) * 3
        truth.append(target(boxes.tolist(), labels.tolist()))
        scores = torch.rand(20, generator=generator)
        preds.append(pred((boxes + jitter).tolist(), scores.tolist(), labels.tolist()))
    reference = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True)
    reference.update([dict(p) for p in preds], [dict(t) for t in truth])
    expected = reference.compute()

    metrics = detection_metrics(preds, truth, CLASSES)
    assert 0.0 < metrics["map50_95"] < 1.0
    assert metrics["map50_95"] == pytest.approx(float(expected["map"]), abs=1e-6)
    assert metrics["map50"] == pytest.approx(float(expected["map_50"]), abs=1e-6)
    for index, name in enumerate(CLASSES):
        assert metrics["per_class"][name]["ap50_95"] == pytest.approx(float(expected["map_per_class"][index]))


def test_map_ranks_more_than_100_detections_per_image():
    # A board carries hundreds of parts; COCO's default limit of 100 would cap recall at 100/150.
    corners = torch.arange(150, dtype=torch.float32).reshape(-1, 1) * 30  # disjoint boxes in a row
    boxes = torch.cat([corners, torch.zeros_like(corners), corners + 20, torch.full_like(corners, 20)], dim=1)
    scores = torch.linspace(0.6, 0.99, 150).tolist()
    truth = [target(boxes.tolist(), [0] * 150)]
    metrics = detection_metrics([pred(boxes.tolist(), scores, [0] * 150)], truth, CLASSES)
    assert metrics["map50"] == pytest.approx(1.0)
    assert metrics["tp"] == 150


@pytest.mark.parametrize(
    ("preds", "targets", "message"),
    [
        ([pred([], [], [])], [], "1 prediction dicts but 0"),
        ([pred([[0, 0, 1, 1]], [0.9], [3])], [target([], [])], "3 classes"),
        ([pred([[0, 0, 1, 1]], [0.9, 0.8], [0])], [target([], [])], "2 scores"),
        ([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}], [target([], [])], "lacks"),
    ],
)
def test_bad_input_raises(preds, targets, message: str):
    with pytest.raises(ValueError, match=message):
        detection_metrics(preds, targets, CLASSES)


def test_summarise_repeats_mean_and_sample_std():
    runs = [
        {"f1": 0.5, "tp": 4, "class_names": ["IC"], "per_class": {"IC": {"f1": 1.0}, "C": {"f1": None}}},
        {"f1": 0.7, "tp": 6, "class_names": ["IC"], "per_class": {"IC": {"f1": 0.0}, "C": {"f1": None}}},
        {"f1": 0.9, "tp": 8, "class_names": ["IC"], "per_class": {"IC": {"f1": 0.5}, "C": {"f1": 0.2}}},
    ]
    summary = summarise_repeats(runs)
    assert summary["n_repeats"] == 3
    assert summary["mean"]["f1"] == pytest.approx(0.7)
    assert summary["std"]["f1"] == pytest.approx(0.2)  # ddof=1: sqrt((0.04 + 0 + 0.04) / 2)
    assert summary["mean"]["tp"] == pytest.approx(6.0) and summary["std"]["tp"] == pytest.approx(2.0)
    assert summary["mean"]["per_class"]["IC"]["f1"] == pytest.approx(0.5)
    assert summary["std"]["per_class"]["IC"]["f1"] == pytest.approx(0.5)
    # A class present in one run only: its mean is that run's value and there is no spread.
    assert summary["mean"]["per_class"]["C"]["f1"] == pytest.approx(0.2)
    assert summary["std"]["per_class"]["C"]["f1"] is None
    assert "class_names" not in summary["mean"]


def test_summarise_single_repeat_has_no_std_and_none_stays_none():
    summary = summarise_repeats([{"map50": 0.25, "ap50": None}])
    assert summary["mean"] == {"map50": 0.25, "ap50": None}
    assert summary["std"] == {"map50": None, "ap50": None}
    with pytest.raises(ValueError, match="at least one"):
        summarise_repeats([])


def test_summarise_real_metrics_dicts():
    truth = [target([[0, 0, 10, 10]], [0])]
    runs = [
        detection_metrics([pred([[0, 0, 10, 10]], [0.9], [0])], truth, CLASSES),
        detection_metrics([pred([[50, 50, 60, 60]], [0.9], [0])], truth, CLASSES),
    ]
    summary = summarise_repeats(runs)
    assert summary["mean"]["f1"] == pytest.approx(0.5)
    assert summary["std"]["f1"] == pytest.approx(math.sqrt(0.5))
    assert summary["mean"]["per_class"]["TC"]["f1"] is None
