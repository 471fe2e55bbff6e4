"""What an exported ONNX file says about itself, in its `metadata_props`.

Keys (values are strings, as ONNX stores them):
    format      `ewaste-vision-onnx/1`; a file without it is not ours
    version     the ewaste-vision version that wrote it
    task        `classify`, `multilabel` or `detect`;  backbone: the backbone's registry name
    class_names, image_size, mean, std: JSON; the input is RGB float in [0, 1] (mean/std are
                applied inside the graph and listed for reference)
    detector    detect only, JSON: `FcosSettings`, the postprocess run beside the graph
    any other   one entry of the run's `ModelMeta.extra`, JSON (e.g. `thresholds` of a
                multilabel run, `detector_size` and `modality` of a detect run)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ewaste_vision import __version__
from ewaste_vision.errors import RunError
from ewaste_vision.model_meta import ModelMeta

ONNX_FORMAT = "ewaste-vision-onnx/1"
INPUT_NAME = "images"
PROBABILITIES = "probabilities"
BOX_SUFFIX = ".boxes.onnx"
"""A detector's box classifier goes to a second file beside it: `model.onnx` -> `model.boxes.onnx`."""
BOX_IMAGE = "image"
BOX_BOXES = "boxes"
"""Inputs of the box-classifier file: one image [1, 3, H, W] in [0, 1] and pixel boxes [N, 4]."""

_PLAIN_KEYS = ("format", "version", "task", "backbone")
_JSON_KEYS = ("class_names", "image_size", "mean", "std", "detector")


@dataclass(frozen=True)
class FcosSettings:
    """Everything torchvision's FCOS does around its network, as numbers."""

    min_size: int
    """Target short side of the resize (the short side is scaled to this ...)."""
    max_size: int
    """... unless the long side would pass this."""
    size_divisible: int
    """Padded input sides are multiples of this."""
    anchor_sizes: list[int]
    """Anchor side per pyramid level, finest first: box regression is in these units."""
    score_thresh: float
    nms_thresh: float
    topk_candidates: int
    """Best-scoring (point, class) pairs kept per level before NMS."""
    detections_per_img: int


@dataclass
class OnnxMeta:
    """The run's `ModelMeta` and, for detectors, their postprocess settings."""

    model: ModelMeta
    detector: FcosSettings | None = None

    def to_props(self) -> dict[str, str]:
        """`metadata_props` entries for the file."""
        props = {
            "format": ONNX_FORMAT,
            "version": __version__,
            "task": self.model.task,
            "backbone": self.model.backbone,
            "class_names": json.dumps(list(self.model.class_names)),
            "image_size": json.dumps(int(self.model.image_size)),
            "mean": json.dumps([float(v) for v in self.model.mean]),
            "std": json.dumps([float(v) for v in self.model.std]),
        }
        if self.detector is not None:
            props["detector"] = json.dumps(asdict(self.detector))
        for key, value in self.model.extra.items():
            if key in _PLAIN_KEYS or key in _JSON_KEYS:
                raise ValueError(f"extra key {key!r} would overwrite a metadata key of the same name")
            props[key] = json.dumps(value)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: Path) -> OnnxMeta:
        """Read `metadata_props`; a `RunError` naming `source` when they are not ours or incomplete."""
        if props.get("format") != ONNX_FORMAT:
            raise RunError(
                f"{source}: not an ewaste-vision ONNX file (no {ONNX_FORMAT!r} tag); "
                "export one with `ewaste export RUN --format onnx`"
            )
        try:
            values: dict[str, Any] = {key: props[key] for key in ("task", "backbone")}
            values.update({key: json.loads(props[key]) for key in _JSON_KEYS if key in props})
            extra = {
                key: json.loads(value)
                for key, value in props.items()
                if key not in _PLAIN_KEYS and key not in _JSON_KEYS
            }
            detector = FcosSettings(**values.pop("detector")) if "detector" in values else None
        except (KeyError, TypeError, ValueError) as exc:
            raise RunError(
                f"{source}: ONNX metadata is incomplete or damaged ({exc}); export it again"
            ) from exc
        if values["task"] == "detect" and detector is None:
            raise RunError(f"{source}: a detect model without its `detector` settings; export it again")
        return cls(ModelMeta.from_dict({**values, "extra": extra}, source), detector)
