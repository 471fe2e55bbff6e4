"""Heatmap quality of a run, measured on its test images against their boxes."""

from __future__ import annotations

from typing import Any

import torch

from ewaste_vision.data.datasets import ImageFileDataset
from ewaste_vision.data.records import ImageRecord
from ewaste_vision.report.markdown import markdown_table

CAM_QUALITY_IMAGES = 48
"""Images scored for pointing game and energy; enough for a per-class picture, cheap on a CPU."""
ROAD_IMAGES = 8
"""Images scored with ROAD, which needs two sparse solves per image and percentile. A run may ask
for another number with the task setting `road_images` (`TrainConfig.extra`, kept in the run's
`meta.extra`, so `ewaste evaluate` scores it the same way); the demo asks for 4."""
ROAD_PERCENTILES = (20, 50, 80)


def heatmap_quality(predictor: Any, records: list[ImageRecord]) -> tuple[dict[str, Any], list[str]]:
    """`cam_pointing`, `cam_energy_in_box`, `cam_road` (and how many images each covers) for
    `metrics.json`, and a report section.

    Returns empty results when no record has boxes (nothing to compare heatmaps with).
    """
    from ewaste_vision.explain.quality import cam_quality

    with_boxes = [r for r in records if r.boxes][:CAM_QUALITY_IMAGES]
    if not with_boxes:
        return {}, []
    meta = predictor.meta
    dataset = ImageFileDataset(
        [r.path for r in with_boxes], torch.zeros(len(with_boxes)), predictor.transform, meta.image_size
    )
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])  # [N, 3, S, S]
    model = predictor.model.to(memory_format=torch.contiguous_format)
    boxes = [list(r.boxes) for r in with_boxes]
    scores = cam_quality(model, images, boxes, meta.class_names, backbone=meta.backbone, road=False)
    road_images = int(meta.extra.get("road_images", ROAD_IMAGES))
    if road_images < 1:
        raise ValueError(f"road_images must be at least 1, got {road_images}")
    road = cam_quality(
        model,
        images[:road_images],
        boxes[:road_images],
        meta.class_names,
        backbone=meta.backbone,
        road=True,
        road_percentiles=ROAD_PERCENTILES,
    )["cam_road"]
    metrics = {
        "cam_method": scores["cam_method"],
        "cam_images": len(with_boxes),
        "cam_pointing": scores["cam_pointing"],
        "cam_energy_in_box": scores["cam_energy_in_box"],
        "cam_road": road,
        "cam_road_images": min(road_images, len(with_boxes)),
    }
    return metrics, [_section(metrics)]


def _section(metrics: dict[str, Any]) -> str:
    rows = []
    for name, pointing in metrics["cam_pointing"].items():
        energy = metrics["cam_energy_in_box"].get(name, {})
        rows.append(
            [
                name,
                f"{pointing['cam']:.2f}",
                f"{pointing['centre_baseline']:.2f}",
                f"{energy.get('cam', float('nan')):.2f}",
                f"{energy.get('centre_baseline', float('nan')):.2f}",
                str(pointing["n"]),
            ]
        )
    overall = _weighted(metrics["cam_pointing"])
    return (
        "## Do the heatmaps point at the components?\n\n"
        f"{metrics['cam_method']} on {metrics['cam_images']} test images, scored against the YOLO boxes: "
        f"the pointing game asks whether a class's heatmap peaks inside a box of that class "
        f"(overall {overall['cam']:.2f}, centre-Gaussian baseline {overall['centre_baseline']:.2f}); "
        "energy is the share of the heatmap inside those boxes. ROAD scores are in metrics.json.\n\n"
        + markdown_table(
            ["Class", "Pointing", "Pointing (centre)", "Energy in box", "Energy (centre)", "Pairs"], rows
        )
    )


def _weighted(per_class: dict[str, dict[str, float]]) -> dict[str, float]:
    total = sum(v["n"] for v in per_class.values()) or 1
    return {
        key: sum(v[key] * v["n"] for v in per_class.values()) / total for key in ("cam", "centre_baseline")
    }
