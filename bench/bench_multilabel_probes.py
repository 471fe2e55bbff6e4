"""How far frozen EfficientNet-Lite0 features go on board components (issue 3's accuracy target).

The default multi-label model is a linear probe on globally pooled features at 256 px. Small parts
fill a few pixels of a 640 px board photo, so this bench asks whether a frozen backbone does
better when it looks closer or keeps location:

- `pooled`: the feature map at a higher input size, pooled by mean or by GeM (p=3, between mean
  and max), then a linear head;
- `dense`: a linear classifier on every cell of the feature map, trained on the YOLO boxes (a cell
  is positive for a class when its centre lies in a box of that class, or it holds the box's
  centre), plus an image-level loss on the cells' maximum; the image score is that maximum.

Every probe is fitted with Adam on the training split (mirrored copies included), the epoch with
the best validation loss is kept, per-class thresholds are tuned on validation as the product
does, and micro-/macro-F1 are measured once on test. Feature maps are computed once per run.

Run from the repository root, on a grouped split (`ewaste data split ... --out pcb-split`):
    python bench/bench_multilabel_probes.py pcb-split --size 640
    python bench/bench_multilabel_probes.py pcb-split --size 640 --quick   # 32 images per split
    python bench/bench_multilabel_probes.py pcb-split --detector runs/detector   # adds its boxes

With `--detector RUN` (a detect run trained on the same split), the detector's boxes are scored as
a multi-label answer too: a class's score is its best box's confidence. With `--probe RUN` as well
(a multilabel run on the same split), that run's probabilities are scored alone and averaged with
the detector's scores. `--runs-only` skips the frozen-feature probes (about 2 minutes instead of 8):
    python bench/bench_multilabel_probes.py pcb-split --runs-only \
        --detector runs/detector --probe runs/components
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from _common import RESULTS_DIR, describe, machine_facts, print_table, write_json
from ewaste_vision.data.records import ImageRecord
from ewaste_vision.data.transforms import eval_transform
from ewaste_vision.data.yolo import multi_hot, read_yolo_dataset
from ewaste_vision.hardware import autocast, configure_threads, use_bf16
from ewaste_vision.models.registry import create_backbone, get_backbone_spec
from ewaste_vision.report.multilabel import multilabel_metrics, tune_thresholds

BACKBONE = "efficientnet_lite0"
WEIGHT_DECAYS = (1e-3, 1e-2)


@torch.no_grad()
def feature_maps(
    network: torch.nn.Module, records: list[ImageRecord], size: int, mirror: bool
) -> torch.Tensor:
    """bf16 feature maps [N, C, h, w] of the images (mirrored when `mirror`)."""
    spec = get_backbone_spec(BACKBONE)
    transform = eval_transform(size, spec.mean, spec.std)
    chunks = []
    for start in range(0, len(records), 16):
        batch = torch.stack(
            [transform(Image.open(r.path).convert("RGB")) for r in records[start : start + 16]]
        )
        batch = batch.flip(-1) if mirror else batch
        with autocast(use_bf16("auto")):
            chunks.append(network(batch.contiguous(memory_format=torch.channels_last)).to(torch.bfloat16))
    return torch.cat(chunks)


def cell_targets(record: ImageRecord, classes: int, height: int, width: int, mirror: bool) -> torch.Tensor:
    """[classes, h, w]: 1 where a cell's centre lies in a box of that class, or holds its centre."""
    targets = torch.zeros(classes, height, width)
    centres_x, centres_y = torch.arange(width) + 0.5, torch.arange(height) + 0.5
    for box in record.boxes:
        cx = 1 - box.cx if mirror else box.cx
        inside_x = ((cx - box.w / 2) * width <= centres_x) & (centres_x <= (cx + box.w / 2) * width)
        inside_y = ((box.cy - box.h / 2) * height <= centres_y) & (centres_y <= (box.cy + box.h / 2) * height)
        targets[box.class_id] = torch.maximum(
            targets[box.class_id], (inside_y[:, None] & inside_x[None, :]).float()
        )
        targets[box.class_id, min(int(box.cy * height), height - 1), min(int(cx * width), width - 1)] = 1
    return targets


def fit_probe(
    head: torch.nn.Module,
    inputs: torch.Tensor,
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scores_of: Callable[[torch.Tensor], torch.Tensor],
    val_inputs: torch.Tensor,
    val_targets: torch.Tensor,
    epochs: int,
    lr: float,
    weight_decay: float,
) -> torch.nn.Module:
    """Adam on `loss_of(head(batch), batch indices)`; keeps the epoch with the best validation loss."""
    optimiser = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    best_loss, best_state = float("inf"), None
    for _ in range(epochs):
        head.train()
        order = torch.randperm(len(inputs))
        for start in range(0, len(inputs), 32):
            index = order[start : start + 32]
            loss = loss_of(head(inputs[index].float()), index)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        head.eval()
        with torch.no_grad():
            val_loss = float(F.binary_cross_entropy_with_logits(scores_of(val_inputs), val_targets))
        if val_loss < best_loss:
            best_loss, best_state = val_loss, {k: v.clone() for k, v in head.state_dict().items()}
    assert best_state is not None
    head.load_state_dict(best_state)
    return head


def best_box_scores(run: Path, records: list[ImageRecord], classes: int) -> torch.Tensor:
    """[N, classes]: each class's highest box confidence in each image (0 without a box)."""
    from ewaste_vision.detect.evaluate import predict_records
    from ewaste_vision.detect.predictor import Detector

    predictions, _, kept, _ = predict_records(Detector.from_run(run), records)
    assert len(kept) == len(records), "unreadable images in the split"
    scores = torch.zeros(len(records), classes)
    for row, prediction in enumerate(predictions):
        labels, confidences = prediction["labels"].tolist(), prediction["scores"].tolist()
        for label, confidence in zip(labels, confidences, strict=True):
            scores[row, label] = max(float(scores[row, label]), confidence)
    return scores


def pool(maps: torch.Tensor, how: str) -> torch.Tensor:
    maps = maps.float()
    if how == "mean":
        return maps.mean((2, 3))
    return maps.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3)  # GeM, p = 3


def frozen_probe_rows(
    args: argparse.Namespace,
    splits: dict[str, list[ImageRecord]],
    targets: dict[str, torch.Tensor],
    score: Callable[[str, torch.Tensor, torch.Tensor], dict[str, Any]],
    rows: list[dict[str, Any]],
) -> str:
    """Fit the pooled and dense probes on frozen feature maps; append their rows; say what ran."""
    classes = targets["train"].shape[1]
    network, source = create_backbone(BACKBONE, pretrained=True)
    network.eval().to(memory_format=torch.channels_last)
    started = time.perf_counter()
    train_maps = torch.cat([feature_maps(network, splits["train"], args.size, m) for m in (False, True)])
    val_maps = feature_maps(network, splits["val"], args.size, False)
    test_maps = feature_maps(network, splits["test"], args.size, False)
    feature_seconds = time.perf_counter() - started
    train_targets = torch.cat([targets["train"]] * 2)
    epochs = 3 if args.quick else 300

    for how in ("mean", "gem"):
        pooled = {"train": pool(train_maps, how), "val": pool(val_maps, how), "test": pool(test_maps, how)}
        mu, sd = pooled["train"].mean(0), pooled["train"].std(0) + 1e-6
        pooled = {s: (x - mu) / sd for s, x in pooled.items()}
        for weight_decay in WEIGHT_DECAYS:
            head = torch.nn.Sequential(
                torch.nn.Dropout(0.2), torch.nn.Linear(pooled["train"].shape[1], classes)
            )
            fit_probe(
                head,
                pooled["train"],
                lambda logits, index: F.binary_cross_entropy_with_logits(logits, train_targets[index]),
                head,
                pooled["val"],
                targets["val"],
                epochs,
                1e-3,
                weight_decay,
            )
            with torch.no_grad():
                rows.append(
                    score(f"pooled {how}, wd {weight_decay:g}", head(pooled["val"]), head(pooled["test"]))
                )
            print(rows[-1], flush=True)

    height, width = train_maps.shape[-2:]
    cells = torch.stack(
        [cell_targets(r, classes, height, width, m) for m in (False, True) for r in splits["train"]]
    )
    dense = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Conv2d(train_maps.shape[1], classes, 1))

    def image_scores(maps: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [dense(maps[i : i + 64].float()).flatten(2).amax(-1) for i in range(0, len(maps), 64)]
        )

    def dense_loss(cell_logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        image_logits = cell_logits.flatten(2).amax(-1)
        return F.binary_cross_entropy_with_logits(
            cell_logits, cells[index]
        ) + F.binary_cross_entropy_with_logits(image_logits, train_targets[index])

    fit_probe(
        dense,
        train_maps,
        dense_loss,
        image_scores,
        val_maps,
        targets["val"],
        3 if args.quick else 15,
        1e-2,
        1e-4,
    )
    with torch.no_grad():
        rows.append(score("dense, box-supervised", image_scores(val_maps), image_scores(test_maps)))
    print(rows[-1], flush=True)

    network_facts = f"{BACKBONE} ({source}) at {args.size} px; feature maps in {feature_seconds:.0f} s"
    return network_facts


def run_rows(
    args: argparse.Namespace,
    splits: dict[str, list[ImageRecord]],
    classes: int,
    score: Callable[[str, torch.Tensor, torch.Tensor], dict[str, Any]],
    rows: list[dict[str, Any]],
) -> None:
    """Rows for the trained runs given: the detector's boxes, the probe run, and their average."""
    detector_scores = probe_scores = None
    if args.detector is not None:
        detector_scores = [best_box_scores(args.detector, splits[s], classes) for s in ("val", "test")]
        rows.append(score(f"detector boxes ({args.detector.name})", *_logits(detector_scores)))
        print(rows[-1], flush=True)
    if args.probe is not None:
        from ewaste_vision.inference import Predictor

        predictor = Predictor.from_run(args.probe)
        probe_scores = []
        for split in ("val", "test"):
            probabilities, kept, _ = predictor.predict_files([r.path for r in splits[split]])
            assert len(kept) == len(splits[split]), "unreadable images in the split"
            probe_scores.append(probabilities.float())
        rows.append(score(f"multilabel run ({args.probe.name})", *_logits(probe_scores)))
        print(rows[-1], flush=True)
    if detector_scores is not None and probe_scores is not None:
        mean = [(d + p) / 2 for d, p in zip(detector_scores, probe_scores, strict=True)]
        rows.append(score("mean of the detector's and the multilabel run's scores", *_logits(mean)))
        print(rows[-1], flush=True)


def _logits(scores: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.logit(scores[0], eps=1e-6), torch.logit(scores[1], eps=1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a grouped YOLO split (ewaste data split)")
    parser.add_argument("--size", type=int, default=640, help="input size of the backbone")
    parser.add_argument("--quick", action="store_true", help="32 images per split, 3 epochs")
    parser.add_argument("--detector", type=Path, default=None, help="a detect run on the same split")
    parser.add_argument("--probe", type=Path, default=None, help="a multilabel run on the same split")
    parser.add_argument("--runs-only", action="store_true", help="score only --detector and --probe")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.runs_only and args.detector is None and args.probe is None:
        parser.error("--runs-only needs --detector RUN, --probe RUN or both")
    configure_threads()
    torch.manual_seed(0)
    dataset = read_yolo_dataset(args.data)
    classes = len(dataset.class_names)
    splits = {s: dataset.in_split(s)[: 32 if args.quick else None] for s in ("train", "val", "test")}
    targets = {s: multi_hot(r, classes) for s, r in splits.items()}

    def score(name: str, val_scores: torch.Tensor, test_scores: torch.Tensor) -> dict[str, Any]:
        thresholds = tune_thresholds(torch.sigmoid(val_scores), targets["val"])
        metrics = multilabel_metrics(
            targets["test"], torch.sigmoid(test_scores), dataset.class_names, thresholds, targets["train"]
        )
        kept = ("micro_f1", "macro_f1", "map", "baseline_micro_f1")
        interval = [round(v, 3) for v in metrics.get("micro_f1_interval") or []]
        return {"probe": name, **{k: round(metrics[k], 3) for k in kept}, "micro_f1_interval": interval}

    rows: list[dict[str, Any]] = []
    note = "frozen-feature probes skipped (--runs-only)"
    if not args.runs_only:
        note = frozen_probe_rows(args, splits, targets, score, rows)
    run_rows(args, splits, classes, score, rows)
    facts = machine_facts()
    print(describe(facts))
    print(f"train/val/test {[len(r) for r in splits.values()]} images; {note}")
    print_table(
        ["probe", "test micro-F1", "95% interval", "macro-F1", "mAP"],
        [[r["probe"], r["micro_f1"], r["micro_f1_interval"], r["macro_f1"], r["map"]] for r in rows],
    )
    baseline = rows[0]["baseline_micro_f1"]
    print(f"predict-every-class baseline micro-F1 {baseline:.3f}")
    default_json = "multilabel_runs.json" if args.runs_only else f"multilabel_probes_{args.size}.json"
    write_json(
        args.json or RESULTS_DIR / default_json,
        {"machine": facts, "size": args.size, "rows": rows, "baseline_micro_f1": baseline},
    )


if __name__ == "__main__":
    main()
