"""Multi-label metrics: which component classes does each board carry?

Scores follow torchmetrics' multilabel metrics. Per-class decision thresholds (tuned on the
validation split, see `tune_thresholds`) turn probabilities into yes/no; mAP is threshold-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelStatScores

from ewaste_vision.report.stats import bootstrap_interval

THRESHOLD_GRID = torch.linspace(0.05, 0.95, 19)


def _best_on_grid(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """The grid threshold with the best F1 for 0/1 predictions [T, ...] against `truth` [...].

    Ties go to the threshold closest to 0.5, the least tuned choice.
    """
    tp = (predicted & truth).flatten(1).sum(1).float()
    f1 = 2 * tp / (predicted.flatten(1).sum(1) + truth.sum() + 1e-12)
    best = max(range(len(THRESHOLD_GRID)), key=lambda i: (float(f1[i]), -abs(float(THRESHOLD_GRID[i]) - 0.5)))
    return float(THRESHOLD_GRID[best])


def shared_threshold(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """The one grid threshold that maximises micro-F1 over all classes (0.5 without positives)."""
    return _shared_on_grid(probs[None] >= THRESHOLD_GRID[:, None, None], targets > 0.5)


def _shared_on_grid(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """`shared_threshold` from grid predictions [T, N, C] and truth [N, C]."""
    return round(_best_on_grid(predicted, truth), 2) if truth.any() else 0.5


def tune_thresholds(probs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per class, the grid threshold that maximises F1 on (validation) data.

    A class absent from the data gets `shared_threshold`: there is nothing to tune it on. Pulling
    the other classes toward it too helped weaker models on pcb-components but not the default
    fine-tune, and cost rare classes' F1 (BENCHMARKS.md, `bench/bench_thresholds.py`).
    """
    truth = targets > 0.5  # [N, C]
    predicted = probs[None] >= THRESHOLD_GRID[:, None, None]  # [T, N, C]
    fallback = _shared_on_grid(predicted, truth)
    return [
        round(_best_on_grid(predicted[:, :, k], truth[:, k]), 2) if truth[:, k].any() else fallback
        for k in range(probs.shape[1])
    ]


def _f1_scores(predicted: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    """Micro and macro F1 and per-class counts from 0/1 predictions [N, C]."""
    stats = MultilabelStatScores(num_labels=targets.shape[1], average=None)(predicted.long(), targets.long())
    tp, fp, _, fn, support = stats.unbind(-1)  # each [C]
    precision = tp / (tp + fp).clamp(min=1)
    recall = tp / (tp + fn).clamp(min=1)
    f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    micro = float(2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()).clamp(min=1))
    present = support > 0
    macro = float(f1[present].mean()) if present.any() else 0.0
    return {
        "micro_f1": micro,
        "macro_f1": macro,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "support": support,
    }


def micro_f1_interval(predicted: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """95% percentile-bootstrap interval of micro-F1, resampling test images.

    Augmented copies of one photo count as separate images here, so where a test split holds such
    copies the interval is narrower than the truth.
    """
    if len(targets) == 0:
        return [0.0, 0.0]
    truth = targets > 0.5
    counts = torch.stack(
        [(predicted & truth).sum(1), (predicted & ~truth).sum(1), (~predicted & truth).sum(1)], 1
    ).numpy()  # [N, 3]: tp, fp, fn per image

    def micro_f1(rows: np.ndarray) -> float:
        tp, fp, fn = rows.sum(0)
        return float(2 * tp / max(2 * tp + fp + fn, 1))

    return [round(x, 4) for x in bootstrap_interval(counts, micro_f1)]


def multilabel_metrics(
    targets: torch.Tensor,
    probs: torch.Tensor,
    class_names: Sequence[str],
    thresholds: Sequence[float],
    train_targets: torch.Tensor,
) -> dict[str, Any]:
    """Micro/macro F1, per-class P/R/F1 and 2x2 confusion counts, mAP, and two trivial baselines.

    Args:
        targets: multi-hot truth [N, C].
        probs: probabilities [N, C].
        class_names: C names.
        thresholds: per-class decision thresholds (from `tune_thresholds` on validation data).
        train_targets: multi-hot training labels [M, C], for the prevalence baseline.

    Returns:
        JSON-ready dict with `micro_f1`, `macro_f1`, `per_class`, `map`, `baseline_micro_f1`,
        `baselines` and `n_test`.
    """
    targets = targets.float()
    threshold_tensor = torch.tensor(list(thresholds), dtype=probs.dtype)
    predicted = probs >= threshold_tensor  # [N, C]
    scores = _f1_scores(predicted, targets)
    present = targets.sum(0) > 0
    average_precision = MultilabelAveragePrecision(num_labels=targets.shape[1], average=None)(
        probs, targets.long()
    )  # [C], NaN-free only for classes present
    per_class = {}
    for k, name in enumerate(class_names):
        tp, fp, fn = int(scores["tp"][k]), int(scores["fp"][k]), int(scores["fn"][k])
        per_class[name] = {
            "precision": float(scores["precision"][k]),
            "recall": float(scores["recall"][k]),
            "f1": float(scores["f1"][k]),
            "support": int(scores["support"][k]),
            "threshold": float(thresholds[k]),
            "average_precision": float(average_precision[k]) if present[k] else None,
            "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": len(targets) - tp - fp - fn},
        }
    every_class = _f1_scores(torch.ones_like(predicted), targets)
    prevalence = train_targets.float().mean(0) if len(train_targets) else targets.mean(0)  # [C]
    prevalence_scores = prevalence.expand_as(probs)
    by_prevalence = _f1_scores(prevalence_scores >= 0.5, targets)
    prevalence_ap = MultilabelAveragePrecision(num_labels=targets.shape[1], average=None)(
        prevalence_scores.contiguous(), targets.long()
    )
    return {
        "n_test": len(targets),
        "class_names": list(class_names),
        "micro_f1": scores["micro_f1"],
        "micro_f1_interval": micro_f1_interval(predicted, targets),
        "macro_f1": scores["macro_f1"],
        "map": float(average_precision[present].mean()) if present.any() else 0.0,
        "per_class": per_class,
        "baseline_micro_f1": every_class["micro_f1"],
        "baselines": {
            "predict every class": {"micro_f1": every_class["micro_f1"], "macro_f1": every_class["macro_f1"]},
            "predict the training prevalence": {
                "micro_f1": by_prevalence["micro_f1"],
                "macro_f1": by_prevalence["macro_f1"],
                "map": float(prevalence_ap[present].mean()) if present.any() else 0.0,
            },
        },
    }
