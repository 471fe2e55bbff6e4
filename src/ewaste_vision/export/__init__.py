"""Trained models for other runtimes: ONNX files that carry their own preprocessing and classes,
and predictors that run them with onnxruntime (no `model.pt`, no pickle).

`export_onnx` writes the file; `load_onnx` reads it back; `OnnxClassifier` and `OnnxDetector`
predict with it as `Predictor` and `Detector` do with a run directory. Running a file needs no
PyTorch: `export_onnx`, which does, is imported on first use.
"""

from typing import TYPE_CHECKING, Any

from ewaste_vision.export.metadata import ONNX_FORMAT, OnnxMeta
from ewaste_vision.export.runtime import OnnxClassifier, OnnxDetector, is_onnx_file, load_onnx

if TYPE_CHECKING:
    from ewaste_vision.export.onnx_export import export_onnx

__all__ = [
    "ONNX_FORMAT",
    "OnnxClassifier",
    "OnnxDetector",
    "OnnxMeta",
    "export_onnx",
    "is_onnx_file",
    "load_onnx",
]


def __getattr__(name: str) -> Any:
    # Importing `onnx_export` imports torch; an edge box that only runs ONNX files has none.
    if name == "export_onnx":
        from ewaste_vision.export.onnx_export import export_onnx

        return export_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
