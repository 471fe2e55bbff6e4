"""Single-label classification metrics, as a JSON-ready dict for `metrics.json` and the report.

Only what is specific to single-label classification lives here; intervals come from `stats`,
figures from `plots` and the report text from `markdown`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from ewaste_vision.report.stats import wilson_interval

_PER_CLASS_METRICS = {
    "precision": MulticlassPrecision,
    "recall": MulticlassRecall,
    "f1": MulticlassF1Score,
}


def classification_metrics(
    y_true: Sequence[int] | torch.Tensor,
    probs: torch.Tensor,
    class_names: list[str],
    train_labels: Sequence[int] | torch.Tensor | None = None,
) -> dict[str, Any]:
    """Accuracy with a confidence interval, per-class scores, confusion matrix and a baseline.

    Predictions are the arg-max of `probs`, so logits work as well as probabilities.

    A class with no test images is still listed: its recall (and F1) is 0 by torchmetrics'
    `zero_division=0` rule, as is the precision of a class never predicted. `macro_f1`,
    `macro_precision` and `macro_recall` follow torchmetrics and average over the classes that
    occur in the test labels or the predictions; a class absent from both carries no information
    and is left out of the mean.

    Args:
        y_true: true class index of each test image, length N.
        probs: scores, shape [N, C] with C == len(class_names).
        class_names: class names in index order.
        train_labels: labels of the training split. When given, the baseline predicts the
            training split's majority class (what a model that learned nothing would do); when
            None, the test split's own majority class, which flatters the baseline slightly.

    Returns:
        A dict of plain Python numbers and lists with keys `n_test`, `num_classes`,
        `class_names`, `n_correct`, `accuracy`, `accuracy_ci95` ([low, high], Wilson),
        `top2_accuracy` (only when C > 2), `macro_precision`, `macro_recall`, `macro_f1`,
        `per_class` ({name: {precision, recall, f1, support}}), `confusion_matrix` (rows are
        true classes, columns predicted), `baseline` ({rule, class, accuracy}) and
        `baseline_accuracy`.

    Raises:
        ValueError: on mismatched shapes, an empty test set, or labels outside [0, C).
    """
    targets = torch.as_tensor(y_true).detach().to(device="cpu", dtype=torch.long).reshape(-1)  # [N]
    scores = probs.detach().to(device="cpu", dtype=torch.float32)  # [N, C]
    num_classes = len(class_names)
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise ValueError(
            f"probs must have shape [N, {num_classes}] to match class_names, got {tuple(scores.shape)}"
        )
    if scores.shape[0] != targets.numel():
        raise ValueError(f"{targets.numel()} labels but {scores.shape[0]} rows of probs")
    if targets.numel() == 0:
        raise ValueError("no test samples: cannot compute classification metrics on an empty split")
    _check_label_range(targets, num_classes, "y_true")

    n_test = targets.numel()
    preds = scores.argmax(dim=1)  # [N]
    # Every top-1 metric gets the same hard predictions, so `n_correct` (which the Wilson
    # interval needs) and `accuracy` cannot disagree on ties between scores.
    n_correct = int((preds == targets).sum())
    accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")(preds, targets)
    per_class_scores = {
        name: metric_cls(num_classes=num_classes, average=None, zero_division=0)(preds, targets)
        for name, metric_cls in _PER_CLASS_METRICS.items()
    }  # each [C]
    macro = {
        name: float(metric_cls(num_classes=num_classes, average="macro", zero_division=0)(preds, targets))
        for name, metric_cls in _PER_CLASS_METRICS.items()
    }
    confusion = MulticlassConfusionMatrix(num_classes=num_classes)(preds, targets)  # [C, C], rows true
    support = torch.bincount(targets, minlength=num_classes)  # [C]

    low, high = wilson_interval(n_correct, n_test)
    metrics: dict[str, Any] = {
        "n_test": n_test,
        "num_classes": num_classes,
        "class_names": list(class_names),
        "n_correct": n_correct,
        "accuracy": float(accuracy),
        "accuracy_ci95": [low, high],
    }
    if num_classes > 2:
        top2 = MulticlassAccuracy(num_classes=num_classes, average="micro", top_k=2)(scores, targets)
        metrics["top2_accuracy"] = float(top2)
    metrics.update(
        {
            "macro_precision": macro["precision"],
            "macro_recall": macro["recall"],
            "macro_f1": macro["f1"],
            "per_class": {
                name: {
                    "precision": float(per_class_scores["precision"][index]),
                    "recall": float(per_class_scores["recall"][index]),
                    "f1": float(per_class_scores["f1"][index]),
                    "support": int(support[index]),
                }
                for index, name in enumerate(class_names)
            },
            "confusion_matrix": confusion.tolist(),
        }
    )
    baseline = majority_baseline(targets, class_names, train_labels)
    metrics["baseline"] = baseline
    metrics["baseline_accuracy"] = baseline["accuracy"]
    return metrics


def majority_baseline(
    y_true: Sequence[int] | torch.Tensor,
    class_names: list[str],
    train_labels: Sequence[int] | torch.Tensor | None = None,
) -> dict[str, Any]:
    """Accuracy on `y_true` of always predicting one majority class.

    Ties go to the lowest class index so the baseline is deterministic.

    Args:
        y_true: test labels.
        class_names: class names in index order.
        train_labels: training labels to pick the class from; None picks it from `y_true`.

    Returns:
        {"rule": which split the class came from, "class": its name, "class_index": its index,
        "accuracy": fraction of `y_true` equal to it}.

    Raises:
        ValueError: if the labels picking the class are empty or out of range.
    """
    targets = torch.as_tensor(y_true).detach().cpu().to(torch.long).reshape(-1)
    if train_labels is None:
        source, rule = targets, "majority class of the test split (no training labels given)"
    else:
        source = torch.as_tensor(train_labels).detach().cpu().to(torch.long).reshape(-1)
        rule = "majority class of the training split"
    if source.numel() == 0:
        raise ValueError("cannot pick a majority class from an empty label list")
    _check_label_range(source, len(class_names), "train_labels" if train_labels is not None else "y_true")
    counts = Counter(source.tolist())
    majority = min(counts, key=lambda label: (-counts[label], label))
    accuracy = float((targets == majority).float().mean()) if targets.numel() else 0.0
    return {"rule": rule, "class": class_names[majority], "class_index": majority, "accuracy": accuracy}


def _check_label_range(labels: torch.Tensor, num_classes: int, what: str) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{what} holds labels in [{int(labels.min())}, {int(labels.max())}] "
            f"but there are {num_classes} classes"
        )
