"""`export_onnx`: a run's model as one self-describing ONNX file.

The exporter is torch's TorchScript-based one (`dynamo=False`). The default (torch.export-based)
exporter gives the same graphs and outputs, but needs the `onnxscript` package, which the toolkit
does not depend on, and takes seconds where this takes a fraction of one.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from ewaste_vision.errors import UserError
from ewaste_vision.export.graphs import FcosHeadGraph, ProbabilityGraph, level_output_names
from ewaste_vision.export.metadata import INPUT_NAME, PROBABILITIES, FcosSettings, OnnxMeta
from ewaste_vision.io.atomic import atomic_path
from ewaste_vision.runs import MODEL_FILE, ModelMeta, read_model_file, resolve_run_dir

log = logging.getLogger(__name__)

OPSET = 17
FORMATS = ("onnx",)
"""Export formats `ewaste export` offers."""


def export_onnx(run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Write the model of `run_dir` to `out` (default `RUN/model.onnx`) atomically.

    Args:
        run_dir: a run directory with a trained `model.pt` of any task.
        out: the ONNX file to write.

    Returns:
        The path written.

    Raises:
        UserError: the run is missing or damaged, or onnx is not installed.
    """
    run = resolve_run_dir(run_dir)
    state, meta = read_model_file(run / MODEL_FILE)
    target = Path(out) if out is not None else run / "model.onnx"
    graph, example, outputs, dynamic_axes, onnx_meta = _graph_for(state, meta, run / MODEL_FILE)
    try:
        import onnx
    except ImportError as exc:
        raise UserError("ONNX export needs the onnx package: pip install onnx onnxruntime") from exc
    with atomic_path(target) as tmp, torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated on every call (see the module
        # docstring), and GroupNorm's batch-size check warns that tracing fixes its shape test,
        # which only guards training.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            graph,
            (example,),
            str(tmp),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
        )
        model = onnx.load(str(tmp))
        for key, value in onnx_meta.to_props().items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
    return target


def _graph_for(
    state: dict[str, torch.Tensor], meta: ModelMeta, source: Path
) -> tuple[nn.Module, torch.Tensor, list[str], dict[str, dict[int, str]], OnnxMeta]:
    """The graph to trace, an example input, output names, dynamic axes and the file's metadata."""
    if meta.task == "detect":
        return _detector_graph(state, meta)
    from ewaste_vision.inference import load_classifier
    from ewaste_vision.tasks import get_label_task

    model = load_classifier(state, meta, source)
    graph = ProbabilityGraph(model, get_label_task(meta.task, source), meta.mean, meta.std).eval()
    example = torch.rand(2, 3, meta.image_size, meta.image_size)  # [B, 3, S, S]
    axes = {INPUT_NAME: {0: "batch"}, PROBABILITIES: {0: "batch"}}
    return graph, example, [PROBABILITIES], axes, OnnxMeta(meta)


def _detector_graph(
    state: dict[str, torch.Tensor], meta: ModelMeta
) -> tuple[nn.Module, torch.Tensor, list[str], dict[str, dict[int, str]], OnnxMeta]:
    from ewaste_vision.detect.box_classifier import detector_state
    from ewaste_vision.detect.model import load_detector

    detector = load_detector(detector_state(state), meta, meta.backbone)
    detector.eval()
    extra = dict(meta.extra)
    if extra.pop("box_classifier", None):
        log.warning(
            "the run's box classifier is not exported: the ONNX file gives the detector's own scores "
            "(lower mAP; BENCHMARKS.md, 'A second look at each box')"
        )
    transform = detector.transform
    settings = FcosSettings(
        min_size=int(transform.min_size[-1]),
        max_size=int(transform.max_size),
        size_divisible=int(transform.size_divisible),
        anchor_sizes=[int(sizes[0]) for sizes in detector.anchor_generator.sizes],
        score_thresh=float(detector.score_thresh),
        nms_thresh=float(detector.nms_thresh),
        topk_candidates=int(detector.topk_candidates),
        detections_per_img=int(detector.detections_per_img),
    )
    graph = FcosHeadGraph(detector).eval()
    names = level_output_names(len(settings.anchor_sizes))
    # A non-square example, so no traced shape can stand in for both sides.
    side = -(-meta.image_size // settings.size_divisible) * settings.size_divisible
    example = torch.rand(1, 3, side, side + settings.size_divisible)  # [B, 3, H, W]
    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    axes.update({name: {0: "batch", 2: f"height_{name}", 3: f"width_{name}"} for name in names})
    image_meta = ModelMeta(
        meta.task,
        meta.class_names,
        meta.backbone,
        meta.image_size,
        tuple(transform.image_mean),
        tuple(transform.image_std),
        meta.dropout,
        extra,
    )
    return graph, example, names, axes, OnnxMeta(image_meta, settings)
