"""`Detector`: a trained detector loaded from a run, run on image tensors or files.

Large photos are cut into overlapping tiles at the training resolution (so a 4080 px photo's
small parts are not shrunk away), and the tiles' boxes are merged back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.models.detection import FCOS

from ewaste_vision.data.images import load_rgb
from ewaste_vision.detect.box_classifier import BoxClassifier, detector_state, load_box_classifier
from ewaste_vision.detect.data import input_tensor
from ewaste_vision.detect.facts import DetectorFacts, tile_side
from ewaste_vision.detect.metrics import DetectionPrediction
from ewaste_vision.detect.model import at_input_size, load_detector
from ewaste_vision.detect.scales import detect_sizes, merge_sizes
from ewaste_vision.detect.tiling import as_arrays, as_tensors, detect_images, detect_tiled
from ewaste_vision.errors import RunError
from ewaste_vision.hardware import autocast, use_bf16
from ewaste_vision.runs import ModelMeta, read_model_file, require_task, resolve_run_dir

Detections = DetectionPrediction
"""`boxes` [N, 4] xyxy pixels of the image given, `scores` [N], `labels` [N] int64."""


class Detector(DetectorFacts):
    """A detector with its metadata; `detect` takes float images [3, H, W] in [0, 1].

    With a `box_classifier` (runs trained with one), every image's boxes are re-scored by it
    after detection and tile merging (see `detect.box_classifier`).
    """

    def __init__(
        self,
        model: FCOS,
        meta: ModelMeta,
        precision: str = "auto",
        tile: str = "auto",
        box_classifier: BoxClassifier | None = None,
        device: str = "cpu",
    ) -> None:
        # Images go in and boxes come out on the CPU whatever `device` the networks run on.
        self.device = device
        self.model = model.eval().to(device)
        self.meta = meta
        self.bf16 = use_bf16(precision, device)
        self.tile = tile
        self.box_classifier = box_classifier.to(device) if box_classifier is not None else None
        # One module per input size, all sharing the trained weights (see `detect.scales`).
        self.sized_models = [
            self.model if size == meta.image_size else at_input_size(self.model, size)
            for size in detect_sizes(meta)
        ]

    @classmethod
    def from_run(
        cls,
        run_dir: Path | str,
        precision: str = "auto",
        tile: str = "auto",
        box_classifier: bool = True,
        device: str = "cpu",
    ) -> Detector:
        """The run's detector, with its box classifier unless `box_classifier` is False."""
        path = resolve_run_dir(run_dir)
        state, meta = read_model_file(path / "model.pt")
        require_task(meta, ("detect",), path, "this command")
        model = load_detector(detector_state(state), meta, path / "model.pt")
        try:
            second = load_box_classifier(state, meta, use_bf16(precision)) if box_classifier else None
        except ValueError as exc:
            raise RunError(f"{path / 'model.pt'}: {exc}; train the run again") from None
        return cls(model, meta, precision, tile, second, device)

    def at_sizes(self, sizes: Sequence[int]) -> Detector:
        """The same detector, box classifier, precision and tiling, detecting at input `sizes`
        instead of its run's (to measure what another choice of sizes would give)."""
        extra = {**self.meta.extra, "detect_sizes": [int(size) for size in sizes]}
        precision = "bf16" if self.bf16 else "32"
        meta = replace(self.meta, extra=extra)
        return Detector(self.model, meta, precision, self.tile, self.box_classifier, self.device)

    def load(self, path: Path) -> torch.Tensor:
        """A file as this detector's input, float [3, H, W] in [0, 1]."""
        return input_tensor(path, self.modality)

    def display_image(self, path: Path) -> Image.Image:
        """What a person sees of the input: the photo, or a false-colour X-ray preview."""
        if self.modality == "xray":
            from ewaste_vision.data.xray import xray_preview

            return xray_preview(self.load(path))
        return load_rgb(path)

    @torch.inference_mode()
    def detect_batch(self, images: list[torch.Tensor]) -> list[Detections]:
        """Whole images (scaled to each of the run's input sizes, boxes merged); boxes in the
        images' pixels."""
        images = [image.to(self.device) for image in images]
        with autocast(self.bf16, self.device):
            per_size: list[list[dict[str, Any]]] = [model(images) for model in self.sized_models]
        per_size = [[{key: value.cpu() for key, value in o.items()} for o in found] for found in per_size]
        if len(per_size) == 1:
            return [
                DetectionPrediction(boxes=o["boxes"].float(), scores=o["scores"].float(), labels=o["labels"])
                for o in per_size[0]
            ]
        merged = []
        for parts in zip(*per_size, strict=True):
            found = merge_sizes(
                [as_arrays(part) for part in parts], self.model.nms_thresh, self.model.detections_per_img
            )
            merged.append(as_tensors(found, "cpu"))
        return merged

    def detect(self, images: Sequence[torch.Tensor], batch_size: int = 4) -> list[Detections]:
        """Detections per image; images much larger than the input size are tiled (`tile="auto"`),
        or always (`"always"`) or never (`"never"`)."""
        found = detect_images(
            images,
            self.detect_batch,
            lambda image: detect_tiled(
                self.detect_batch, image, tile=tile_side(self.meta), batch_size=batch_size
            ),
            self.tile,
            tile_side(self.meta),
            batch_size,
        )
        if self.box_classifier is None:
            return found
        return [self.box_classifier.rescore(image, boxes) for image, boxes in zip(images, found, strict=True)]
