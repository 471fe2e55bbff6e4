"""Detection metrics as the X-ray PCB study (seed 001) defines them, plus COCO mAP, as a JSON-ready dict.

The study counts a detection as a true positive when its class is right, its box overlaps the
ground truth with IoU > 0.5 and its confidence is > 0.5; anything else it predicts is a false
positive, and every ground-truth object left unmatched is a false negative. It reports per-class
precision, recall and F1, averaged over ten repeated runs (`summarise_repeats`). mAP@0.5 and
mAP@0.5:0.95 are added because every other detection paper reports them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import torch
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_iou


class DetectionPrediction(TypedDict):
    """Detections in one image, in the torchvision / torchmetrics convention."""

    boxes: torch.Tensor
    """[N, 4] float boxes, (x0, y0, x1, y1) in pixels of the evaluated image."""
    scores: torch.Tensor
    """[N] confidences in [0, 1]."""
    labels: torch.Tensor
    """[N] int64 class indices into `class_names`."""


class DetectionTarget(TypedDict):
    """Ground-truth objects in one image, in the torchvision / torchmetrics convention."""

    boxes: torch.Tensor
    """[M, 4] float boxes, (x0, y0, x1, y1) in pixels of the evaluated image."""
    labels: torch.Tensor
    """[M] int64 class indices into `class_names`."""


def detection_metrics(
    preds: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    class_names: list[str],
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
    max_detections: int = 1000,
) -> dict[str, Any]:
    """Per-class and micro precision, recall and F1 by the study's rule, with mAP@0.5 and mAP@0.5:0.95.

    Matching is greedy, per image and per class: predictions with confidence strictly above
    `score_threshold` are taken in descending score order, and each is a true positive when an
    unmatched ground-truth box of its class has IoU strictly above `iou_threshold` (the one with
    the highest IoU is taken, and each ground-truth box is matched at most once). Predictions at
    or below `score_threshold` are ignored, not counted as false positives: the study counts only
    confident predictions. A prediction of the wrong class is therefore a false positive of the
    predicted class and leaves a false negative of the true one.

    mAP comes from torchmetrics' COCO evaluation on all predictions, whatever their score (AP
    integrates over the score ranking, so a threshold would only cut the curve short); COCO matches
    at IoU >= threshold, a tie the study's rule does not count. Up to `max_detections` per image
    are ranked because a board carries far more than COCO's default of 100 components.

    None marks a value that is undefined rather than bad: a class with no ground truth and no
    prediction above `score_threshold` gets None for precision, recall and F1, and a class with no
    ground truth in any image gets None for AP. Otherwise a 0/0 ratio is 0 (the torchmetrics
    `zero_division=0` rule): precision of a class with ground truth that was never predicted, and
    recall of a class that was predicted but never present.

    Args:
        preds: one dict per image shaped like `DetectionPrediction` (a torchvision detector's
            output as it is); tensors may live on any device.
        targets: one dict per image shaped like `DetectionTarget`, in the same order.
        class_names: class names in index order.
        iou_threshold: a match needs IoU strictly above this.
        score_threshold: a prediction counts only with confidence strictly above this.
        max_detections: most predictions per image ranked for mAP (highest scores first).

    Returns:
        A dict of plain Python numbers with keys `n_images`, `class_names`, `iou_threshold`,
        `score_threshold`, `tp`, `fp`, `fn`, `precision`, `recall`, `f1` (micro: counts summed
        over classes), `macro_f1` (mean over classes whose F1 is not None), `map50`, `map50_95`
        and `per_class` ({name: {precision, recall, f1, tp, fp, fn, ap50, ap50_95}}).

    Raises:
        ValueError: if `preds` and `targets` differ in length, a tensor has the wrong shape, or a
            label lies outside [0, len(class_names)).
    """
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} prediction dicts but {len(targets)} target dicts: need one per image")
    num_classes = len(class_names)
    clean_preds = [_clean_prediction(pred, num_classes, index) for index, pred in enumerate(preds)]
    clean_targets = [_clean_target(target, num_classes, index) for index, target in enumerate(targets)]

    counts = torch.zeros(3, num_classes, dtype=torch.long)  # rows: tp, fp, fn
    for pred, target in zip(clean_preds, clean_targets, strict=True):
        counts += count_matches(pred, target, num_classes, iou_threshold, score_threshold)
    ap = _average_precision(clean_preds, clean_targets, num_classes, max_detections)

    per_class: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(class_names):
        tp, fp, fn = (int(value) for value in counts[:, index])
        per_class[name] = {
            **_prf(tp, fp, fn),
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "ap50": ap["per_class50"][index],
            "ap50_95": ap["per_class50_95"][index],
        }
    tp, fp, fn = (int(value) for value in counts.sum(dim=1))
    f1_values = [scores["f1"] for scores in per_class.values() if scores["f1"] is not None]
    return {
        "n_images": len(clean_preds),
        "class_names": list(class_names),
        "iou_threshold": iou_threshold,
        "score_threshold": score_threshold,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        **_prf(tp, fp, fn),
        "macro_f1": sum(f1_values) / len(f1_values) if f1_values else None,
        "map50": ap["map50"],
        "map50_95": ap["map50_95"],
        "per_class": per_class,
    }


def count_matches(
    pred: Mapping[str, Any],
    target: Mapping[str, Any],
    num_classes: int,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
) -> torch.Tensor:
    """True positives, false positives and false negatives of one image, per class.

    The matching rule is the one `detection_metrics` documents.

    Args:
        pred: detections in the image, shaped like `DetectionPrediction`, on the CPU.
        target: ground truth of the image, shaped like `DetectionTarget`, on the CPU.
        num_classes: number of classes C; labels must lie in [0, C).
        iou_threshold: a match needs IoU strictly above this.
        score_threshold: a prediction counts only with confidence strictly above this.

    Returns:
        Long tensor [3, C]: rows are TP, FP and FN counts.
    """
    counts = torch.zeros(3, num_classes, dtype=torch.long)
    for label in range(num_classes):
        boxes, _ = class_detections(pred, label, score_threshold)
        truth = target["boxes"][target["labels"] == label]  # [G, 4]
        tp = int(match_detections(boxes, truth, iou_threshold).sum())
        counts[:, label] = torch.tensor([tp, len(boxes) - tp, len(truth) - tp])
    return counts


def class_detections(
    pred: Mapping[str, Any], label: int, score_threshold: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One class's boxes [P, 4] and scores [P] in an image, best score first (ties in input
    order), only those scored above `score_threshold` when it is given."""
    keep = pred["labels"] == label
    if score_threshold is not None:
        keep = keep & (pred["scores"] > score_threshold)
    order = torch.argsort(pred["scores"][keep], descending=True, stable=True)
    return pred["boxes"][keep][order], pred["scores"][keep][order]


def match_detections(boxes: torch.Tensor, truth: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """Which of one class's `boxes` [P, 4] (best score first) are true positives against that
    class's `truth` [G, 4]: in order, each takes the unmatched true box it overlaps most, if the
    IoU is above `iou_threshold` (the rule of `detection_metrics`). Bool tensor [P]."""
    hits = torch.zeros(len(boxes), dtype=torch.bool)
    if not len(boxes) or not len(truth):
        return hits
    iou = box_iou(boxes, truth)  # [P, G]
    matched = torch.zeros(len(truth), dtype=torch.bool)
    for index, row in enumerate(iou):
        # An already matched box must not win the argmax, so it is pushed below any IoU.
        candidates = row.masked_fill(matched, -1.0)
        best = int(candidates.argmax())
        if candidates[best] > iou_threshold:
            matched[best] = True
            hits[index] = True
    return hits


def summarise_repeats(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation of every numeric value over repeated runs.

    The study averages ten runs; this turns N `detection_metrics` dicts (or any nested dicts of
    numbers) into one. Nested dicts such as `per_class` are followed, and the result keeps their
    shape. A key whose values are all numbers or None is summarised over the numbers present, so
    a class absent from some runs is averaged over the runs that have it; a key with no numbers at
    all gets None. Keys holding anything else (names, lists) are left out.

    Args:
        runs: one metrics dict per repeat.

    Returns:
        {"n_repeats": N, "mean": {...}, "std": {...}}, where `mean` and `std` mirror the numeric
        keys of the runs. `std` uses N - 1 in the denominator (the runs are a sample of what the
        training recipe produces) and is None where fewer than two numbers were available.

    Raises:
        ValueError: if `runs` is empty.
    """
    if not runs:
        raise ValueError("no runs to summarise: pass at least one metrics dict")
    mean, std = _summarise_level(runs)
    return {"n_repeats": len(runs), "mean": mean, "std": std}


def _summarise_level(runs: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = list(dict.fromkeys(key for run in runs for key in run))
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for key in keys:
        values = [run.get(key) for run in runs]
        if any(isinstance(value, Mapping) for value in values):
            nested = [value if isinstance(value, Mapping) else {} for value in values]
            mean[key], std[key] = _summarise_level(nested)
        elif all(value is None or _is_number(value) for value in values):
            numbers = [float(value) for value in values if value is not None]
            mean[key] = statistics.fmean(numbers) if numbers else None
            std[key] = statistics.stdev(numbers) if len(numbers) > 1 else None
    return mean, std


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but a flag averaged over runs is not a metric.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    if tp + fp + fn == 0:
        return {"precision": None, "recall": None, "f1": None}
    return {
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn),
    }


def _average_precision(
    preds: Sequence[DetectionPrediction],
    targets: Sequence[DetectionTarget],
    num_classes: int,
    max_detections: int,
) -> dict[str, Any]:
    """COCO AP at IoU 0.5 and averaged over 0.5:0.95, overall and per class (None where undefined)."""
    metric = MeanAveragePrecision(
        box_format="xyxy",
        iou_type="bbox",
        max_detection_thresholds=[1, 10, max_detections],
        extended_summary=True,
    )
    metric.warn_on_many_detections = False
    metric.update(
        [{"boxes": pred["boxes"], "scores": pred["scores"], "labels": pred["labels"]} for pred in preds],
        [{"boxes": target["boxes"], "labels": target["labels"]} for target in targets],
    )
    result = metric.compute()
    # pycocotools' summary looks its AP up at exactly 100 detections and returns -1 for any other
    # limit, so AP is averaged here from the precision table instead:
    # [iou thresholds T, recall points R, classes K, area ranges A, detection limits M], -1 = undefined.
    precision = result["precision"][:, :, :, 0, -1]  # [T, R, K], area range "all", largest limit
    classes = [int(label) for label in result["classes"].reshape(-1)]
    per_class50: list[float | None] = [None] * num_classes
    per_class50_95: list[float | None] = [None] * num_classes
    for column, label in enumerate(classes):
        per_class50[label] = _mean_defined(precision[0, :, column])
        per_class50_95[label] = _mean_defined(precision[:, :, column])
    return {
        "map50": _mean_defined(precision[0]) if classes else None,
        "map50_95": _mean_defined(precision) if classes else None,
        "per_class50": per_class50,
        "per_class50_95": per_class50_95,
    }


def _mean_defined(values: torch.Tensor) -> float | None:
    defined = values[values > -1]
    return float(defined.mean()) if defined.numel() else None


def _clean_prediction(item: Mapping[str, Any], num_classes: int, index: int) -> DetectionPrediction:
    boxes, labels = _clean_boxes_labels(item, num_classes, index, "prediction", ("boxes", "scores", "labels"))
    scores = torch.as_tensor(item["scores"]).detach().to(device="cpu", dtype=torch.float32).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"prediction of image {index} has {len(boxes)} boxes but {len(scores)} scores")
    return {"boxes": boxes, "scores": scores, "labels": labels}


def _clean_target(item: Mapping[str, Any], num_classes: int, index: int) -> DetectionTarget:
    boxes, labels = _clean_boxes_labels(item, num_classes, index, "target", ("boxes", "labels"))
    return {"boxes": boxes, "labels": labels}


def _clean_boxes_labels(
    item: Mapping[str, Any], num_classes: int, index: int, what: str, keys: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes [N, 4] float32 and labels [N] int64 on the CPU, checked; errors name the image."""
    missing = [key for key in keys if key not in item]
    if missing:
        raise ValueError(f"{what} dict of image {index} lacks {missing}: need keys {list(keys)}")
    boxes = torch.as_tensor(item["boxes"]).detach().to(device="cpu", dtype=torch.float32)
    labels = torch.as_tensor(item["labels"]).detach().to(device="cpu", dtype=torch.long).reshape(-1)
    if boxes.numel() == 0:
        boxes = boxes.reshape(0, 4)  # an empty image may come as shape [0] rather than [0, 4]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what} boxes of image {index} must have shape [N, 4], got {tuple(boxes.shape)}")
    if len(labels) != len(boxes):
        raise ValueError(f"{what} of image {index} has {len(boxes)} boxes but {len(labels)} labels")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{what} labels of image {index} lie in [{int(labels.min())}, {int(labels.max())}] "
            f"but there are {num_classes} classes"
        )
    return boxes, labels
