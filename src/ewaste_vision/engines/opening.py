"""Opening a model for inference, whichever file holds it and whichever engine runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ewaste_vision.errors import RunError


def open_model(model: Path | str, batch_size: int = 32, device: str = "cpu") -> Any:
    """A `Predictor` or `Detector` on `device` for a run directory, an `OnnxClassifier` or
    `OnnxDetector` (ONNX Runtime on the CPU) for an exported `.onnx` file."""
    from ewaste_vision.export.runtime import OnnxClassifier, OnnxDetector, is_onnx_file, load_onnx

    path = Path(model)
    if is_onnx_file(path):
        loaded = load_onnx(path)
        if loaded.meta.detector is not None:
            return OnnxDetector(loaded)
        return OnnxClassifier(loaded, batch_size)
    if path.is_file():
        raise RunError(f"{path}: expected a run directory or an exported .onnx file")
    from ewaste_vision.runs import MODEL_FILE, read_model_file, resolve_run_dir

    _, meta = read_model_file(resolve_run_dir(path) / MODEL_FILE)
    if meta.task == "detect":
        from ewaste_vision.detect.predictor import Detector

        return Detector.from_run(path, device=device)
    from ewaste_vision.inference import Predictor

    return Predictor.from_run(path, batch_size=batch_size, device=device)
