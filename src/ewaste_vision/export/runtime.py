"""Running an exported ONNX file with onnxruntime: `OnnxClassifier` and `OnnxDetector`.

The file is opened by onnxruntime only (a protobuf graph, nothing unpickled). Images are prepared
with PIL and numpy from the file's metadata, as the PyTorch predictors prepare them, so the two
agree to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ewaste_vision.data.images import load_rgb, shrink_for_cache
from ewaste_vision.detect.box_scores import BoxClassifierSettings, rescore
from ewaste_vision.detect.facts import DetectorFacts, tile_side
from ewaste_vision.detect.scales import detect_sizes, merge_sizes
from ewaste_vision.detect.tiling import detect_images, detect_tiled_arrays
from ewaste_vision.errors import RunError, UnreadableImageError, UserError
from ewaste_vision.export import fcos_numpy
from ewaste_vision.export.metadata import BOX_BOXES, BOX_IMAGE, INPUT_NAME, FcosSettings, OnnxMeta

NumpyDetections = dict[str, np.ndarray]
"""`boxes` [N, 4] float32 xyxy pixels, `scores` [N] float32, `labels` [N] int64, best first."""


@dataclass
class OnnxModel:
    """An onnxruntime session and the metadata of its file."""

    session: Any
    meta: OnnxMeta
    path: Path
    threads: int | None = None


def is_onnx_file(path: Path | str) -> bool:
    """Whether `path` names a file to open as ONNX (by its `.onnx` suffix)."""
    return Path(path).suffix.lower() == ".onnx"


def load_onnx(path: Path | str, threads: int | None = None) -> OnnxModel:
    """Open an exported file with onnxruntime on the CPU.

    Args:
        path: a file written by `export_onnx`.
        threads: intra-op threads; None leaves onnxruntime's default (one per physical core).

    Raises:
        RunError: the file is missing, not ONNX, or not written by ewaste-vision.
        UserError: onnxruntime is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such ONNX file; export one with `ewaste export RUN --format onnx`")
    try:
        import onnxruntime
    except ImportError as exc:
        raise UserError("running ONNX files needs onnxruntime: pip install onnxruntime") from exc
    session = _session(onnxruntime, path, threads)
    props = dict(session.get_modelmeta().custom_metadata_map)
    return OnnxModel(session, OnnxMeta.from_props(props, path), path, threads)


def _session(onnxruntime: Any, path: Path, threads: int | None) -> Any:
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # onnxruntime's errors (InvalidProtobuf, InvalidGraph, Fail, ...) share no base class but Exception.
    except Exception as exc:
        raise RunError(f"{path}: not a readable ONNX model ({type(exc).__name__}); export it again") from exc


class OnnxClassifier:
    """An exported classify or multilabel model; mirrors `Predictor.predict_files`."""

    def __init__(self, model: OnnxModel, batch_size: int = 32) -> None:
        if model.meta.detector is not None:
            raise RunError(f"{model.path}: a detect model; this needs a classify or multilabel export")
        self.model = model
        self.meta = model.meta.model
        self.batch_size = batch_size

    @classmethod
    def from_file(cls, path: Path | str, batch_size: int = 32, threads: int | None = None) -> OnnxClassifier:
        return cls(load_onnx(path, threads), batch_size)

    def prepare(self, image: Image.Image) -> np.ndarray:
        """An RGB image -> float32 [3, S, S] in [0, 1], as `eval_transform` before normalising.

        Resized to S x S as `ImageFileDataset` caches it for evaluation (PIL's bilinear filter).
        """
        resized = shrink_for_cache(image, self.meta.image_size, crops=False)
        return np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Images [B, 3, S, S] float32 in [0, 1] -> probabilities [B, C]."""
        (probs,) = self.model.session.run(None, {INPUT_NAME: np.ascontiguousarray(images, np.float32)})
        return np.asarray(probs)

    def predict_files(
        self, paths: Sequence[Path], progress: bool = False
    ) -> tuple[np.ndarray, list[Path], list[tuple[Path, str]]]:
        """Probabilities [N, C] of the readable files among `paths`, those files, and the skipped ones."""
        chunks, readable, skipped = [], [], []
        batch: list[np.ndarray] = []
        for path in _maybe_progress(paths, progress):
            try:
                batch.append(self.prepare(load_rgb(path)))
                readable.append(path)
            except UnreadableImageError as exc:
                skipped.append((path, exc.reason))
            if len(batch) == self.batch_size:
                chunks.append(self.probabilities(np.stack(batch)))
                batch = []
        if batch:
            chunks.append(self.probabilities(np.stack(batch)))
        probs = np.concatenate(chunks) if chunks else np.zeros((0, len(self.meta.class_names)), np.float32)
        return probs, readable, skipped


class OnnxDetector(DetectorFacts):
    """An exported detector; mirrors `Detector.detect` (whole images batched, large ones tiled)."""

    def __init__(self, model: OnnxModel, tile: str = "auto") -> None:
        if model.meta.detector is None:
            raise RunError(f"{model.path}: a {model.meta.model.task} model; this needs a detect export")
        self.model = model
        self.meta = model.meta.model
        self.settings: FcosSettings = model.meta.detector
        self.tile = tile
        self._mean = np.asarray(self.meta.mean, dtype=np.float32)
        # The run's input sizes, as the PyTorch detector runs them (see `detect.scales`).
        self.sized_settings = [
            replace(self.settings, min_size=size, max_size=size) for size in detect_sizes(self.meta)
        ]
        # The run's box classifier, exported to a second file beside this one.
        box = self.meta.extra.get("box_classifier")
        try:
            self.box_settings = (
                BoxClassifierSettings.from_dict(box, len(self.meta.class_names)) if box else None
            )
        except ValueError as exc:
            raise RunError(f"{model.path}: {exc}; export the run again") from None
        self.box_session: Any = None
        if self.box_settings is not None:
            name = str(self.meta.extra.get("box_classifier_file") or "missing.boxes.onnx")
            box_path = model.path.with_name(name)
            if not box_path.is_file() or box_path == model.path:
                raise RunError(
                    f"{box_path}: the box classifier of {model.path.name} is missing; keep the two "
                    "files together, or export the run again"
                )
            import onnxruntime

            self.box_session = _session(onnxruntime, box_path, model.threads)

    @classmethod
    def from_file(cls, path: Path | str, tile: str = "auto", threads: int | None = None) -> OnnxDetector:
        return cls(load_onnx(path, threads), tile)

    def load(self, path: Path) -> np.ndarray:
        """A file as this detector's input, float32 [3, H, W] in [0, 1] at full resolution."""
        if self.modality == "xray":
            # 16-bit X-ray pairs go through the toolkit's one reader of them, as the PyTorch
            # detector's `load` does (its tensor is this array); imported here so that RGB-only
            # installs need no tifffile.
            from ewaste_vision.data.xray import load_xray_array

            return load_xray_array(path)
        return np.asarray(load_rgb(path), dtype=np.float32).transpose(2, 0, 1) / np.float32(255)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[NumpyDetections]:
        """Whole images [3, H, W] in [0, 1] -> detections in their own pixels, at each of the
        run's input sizes with the boxes merged."""
        if not images:
            return []
        per_size = [self._detect_at(images, settings) for settings in self.sized_settings]
        return [
            merge_sizes(parts, self.settings.nms_thresh, self.settings.detections_per_img)
            for parts in zip(*per_size, strict=True)
        ]

    def _detect_at(self, images: Sequence[np.ndarray], settings: FcosSettings) -> list[NumpyDetections]:
        """One input size: one batch, padded to its largest image as torchvision pads."""
        resized = [fcos_numpy.resize_bilinear(np.asarray(i, np.float32), settings) for i in images]
        batch = fcos_numpy.pad_batch(resized, self._mean, settings.size_divisible)  # [B, 3, H, W]
        outputs = self.model.session.run(None, {INPUT_NAME: batch})
        padded = (batch.shape[2], batch.shape[3])
        results = []
        for index, (image, small) in enumerate(zip(images, resized, strict=True)):
            levels = [(outputs[i][index], outputs[i + 1][index]) for i in range(0, len(outputs), 2)]
            results.append(
                fcos_numpy.postprocess(
                    levels,
                    padded,
                    (small.shape[1], small.shape[2]),
                    (image.shape[1], image.shape[2]),
                    settings,
                )
            )
        return results

    def detect(self, images: Sequence[np.ndarray], batch_size: int = 4) -> list[NumpyDetections]:
        """Detections per image; images much larger than the input size are cut into tiles
        (`tile="auto"`), or always (`"always"`) or never (`"never"`), as `Detector.detect` does."""
        found = detect_images(
            images,
            self.detect_batch,
            lambda image: self._detect_tiled(image, batch_size),
            self.tile,
            tile_side(self.meta),
            batch_size,
        )
        if self.box_settings is None:
            return found
        return [
            rescore(boxes, self._box_probabilities(image), self.box_settings)
            for image, boxes in zip(images, found, strict=True)
        ]

    def _box_probabilities(self, image: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """Boxes [N, 4] -> their class probabilities [N, C + 1] in `image`, by the box classifier."""
        batch = np.ascontiguousarray(np.asarray(image, np.float32)[None])

        def classify(boxes: np.ndarray) -> np.ndarray:
            feed = {BOX_IMAGE: batch, BOX_BOXES: np.ascontiguousarray(boxes, np.float32)}
            return np.asarray(self.box_session.run(None, feed)[0])

        return classify

    def _detect_tiled(self, image: np.ndarray, batch_size: int) -> NumpyDetections:
        # The tile merge is the toolkit's one implementation, shared with `Detector`; only the
        # network and its postprocess run here.
        return detect_tiled_arrays(self.detect_batch, image, tile=tile_side(self.meta), batch_size=batch_size)


def _maybe_progress(paths: Sequence[Path], progress: bool) -> Sequence[Path]:
    if not progress:
        return paths
    from tqdm import tqdm

    return tqdm(paths, unit="image")
