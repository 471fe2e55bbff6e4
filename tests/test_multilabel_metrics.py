"""Multi-label metrics on a hand-made example whose answers are worked out by hand."""

from __future__ import annotations

import pytest
import torch

from ewaste_vision.report.multilabel import multilabel_metrics, shared_threshold, tune_thresholds

TARGETS = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]]).float()
PROBS = torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.8, 0.3], [0.7, 0.4, 0.2], [0.2, 0.1, 0.1]])


def test_scores_at_fixed_thresholds():
    metrics = multilabel_metrics(TARGETS, PROBS, ["a", "b", "c"], [0.5] * 3, TARGETS)
    # 5 true labels, 4 found (b in row 2 is missed at 0.4), no false alarm: F1 = 8 / 9.
    assert metrics["micro_f1"] == pytest.approx(8 / 9)
    assert metrics["per_class"]["b"]["recall"] == pytest.approx(0.5)
    assert metrics["per_class"]["b"]["confusion"] == {"tp": 1, "fp": 0, "fn": 1, "tn": 2}
    # Every class ranks its positives first, so average precision is 1 for each.
    assert metrics["map"] == pytest.approx(1.0)
    # Predicting every class: 5 true positives and 7 false alarms, F1 = 10 / 17.
    assert metrics["baseline_micro_f1"] == pytest.approx(10 / 17)


def test_tuned_thresholds_recover_the_missed_label():
    thresholds = tune_thresholds(PROBS, TARGETS)
    assert thresholds[1] <= 0.4 < 0.8
    metrics = multilabel_metrics(TARGETS, PROBS, ["a", "b", "c"], thresholds, TARGETS)
    assert metrics["micro_f1"] == pytest.approx(1.0)


def test_a_class_absent_everywhere_gets_the_shared_threshold():
    targets = TARGETS.clone()
    targets[:, 2] = 0
    # Shared threshold: the positives left (0.9, 0.7, 0.8, 0.4) clear 0.35 and 0.4, every negative
    # does not; the tie goes to 0.4, nearer 0.5.
    assert tune_thresholds(PROBS, targets)[2] == pytest.approx(0.4)
    metrics = multilabel_metrics(targets, PROBS, ["a", "b", "c"], [0.5] * 3, targets)
    assert metrics["per_class"]["c"]["average_precision"] is None


def test_the_shared_threshold_serves_all_classes_and_each_class_keeps_its_own():
    # Class 0: 100 positives at 0.9, 100 negatives at 0.7 (own best 0.75). Class 1: 2 positives at
    # 0.15, the rest at 0.1 (own best 0.15). Class 2: 60 positives at 0.5, 140 negatives at 0.3
    # (own best 0.5). Pooled, 0.75 wins: it loses class 2's 60 positives, 0.5 would add 100 false
    # alarms of class 0.
    probs = torch.zeros(200, 3)
    targets = torch.zeros(200, 3)
    probs[:, 0] = torch.where(torch.arange(200) < 100, 0.9, 0.7)
    targets[:100, 0] = 1
    probs[:, 1] = torch.where(torch.arange(200) < 2, 0.15, 0.1)
    targets[:2, 1] = 1
    probs[:, 2] = torch.where(torch.arange(200) < 60, 0.5, 0.3)
    targets[:60, 2] = 1
    assert shared_threshold(probs, targets) == pytest.approx(0.75)
    assert tune_thresholds(probs, targets) == pytest.approx([0.75, 0.15, 0.5])
    assert shared_threshold(probs, torch.zeros_like(targets)) == 0.5  # nothing to tune on


def test_micro_f1_interval_brackets_the_estimate_and_collapses_when_every_image_is_right():
    rng = torch.Generator().manual_seed(0)
    targets = (torch.rand(60, 4, generator=rng) > 0.5).float()
    flipped = torch.rand(60, 4, generator=rng) < 0.15  # about one answer in seven wrong
    noisy = torch.where(flipped, 1 - targets, targets)
    metrics = multilabel_metrics(targets, noisy, list("abcd"), [0.5] * 4, targets)
    low, high = metrics["micro_f1_interval"]
    assert low < metrics["micro_f1"] < high < 1.0
    perfect = multilabel_metrics(targets, targets, list("abcd"), [0.5] * 4, targets)
    assert perfect["micro_f1_interval"] == [1.0, 1.0]
