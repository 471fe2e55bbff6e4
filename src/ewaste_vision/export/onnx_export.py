"""`export_onnx`: a run's model as one self-describing ONNX file (a detector with a box classifier: two).

The exporter is torch's TorchScript-based one (`dynamo=False`). The default (torch.export-based)
exporter gives the same graphs and outputs, but needs the `onnxscript` package, which the toolkit
does not depend on, and takes seconds where this takes a fraction of one.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ewaste_vision.errors import UserError
from ewaste_vision.export.graphs import FcosHeadGraph, ProbabilityGraph, level_output_names
from ewaste_vision.export.metadata import (
    BOX_BOXES,
    BOX_IMAGE,
    BOX_SUFFIX,
    INPUT_NAME,
    ONNX_FORMAT,
    PROBABILITIES,
    FcosSettings,
    OnnxMeta,
)
from ewaste_vision.io.atomic import atomic_path
from ewaste_vision.runs import MODEL_FILE, ModelMeta, read_model_file, resolve_run_dir

OPSET = 17
FORMATS = ("onnx",)
"""Export formats `ewaste export` offers."""


def export_onnx(run_dir: Path | str, out: Path | str | None = None) -> list[Path]:
    """Write the model of `run_dir` to `out` (default `RUN/model.onnx`) atomically; a detector's
    box classifier goes beside it (`model.boxes.onnx`).

    Args:
        run_dir: a run directory with a trained `model.pt` of any task.
        out: the ONNX file to write.

    Returns:
        The paths written, the model's first.

    Raises:
        UserError: the run is missing or damaged, or onnx is not installed.
    """
    run = resolve_run_dir(run_dir)
    state, meta = read_model_file(run / MODEL_FILE)
    target = Path(out) if out is not None else run / "model.onnx"
    if meta.task == "fuse":  # two image inputs (RGB, X-ray): 002's RGB-X network
        from ewaste_vision.fusion.export import FUSION_INPUTS, fusion_graph

        fused, inputs, axes = fusion_graph(state, meta, run / MODEL_FILE)
        _write(fused, inputs, target, list(FUSION_INPUTS), [PROBABILITIES], axes, OnnxMeta(meta).to_props())
        return [target]
    graph, example, outputs, dynamic_axes, onnx_meta = _graph_for(state, meta, run / MODEL_FILE)
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise UserError("ONNX export needs the onnx package: pip install onnx onnxruntime") from exc
    written: list[Path] = []
    if meta.task == "detect" and "box_classifier" in meta.extra:
        # A second file: its graph takes a whole image and boxes, the detector's an image batch.
        box_file = target.with_name(f"{target.stem}{BOX_SUFFIX}")
        onnx_meta.model.extra["box_classifier_file"] = box_file.name
        box_graph, box_inputs, box_axes = _box_classifier_graph(state, meta)
        box_props = {"format": ONNX_FORMAT, "role": f"box classifier of {target.name}"}
        _write(box_graph, box_inputs, box_file, [BOX_IMAGE, BOX_BOXES], [PROBABILITIES], box_axes, box_props)
        written.append(box_file)
    _write(graph, (example,), target, [INPUT_NAME], outputs, dynamic_axes, onnx_meta.to_props())
    return [target, *written]


def _write(
    graph: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    target: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    props: dict[str, str],
) -> None:
    """Trace `graph` on `inputs` into the ONNX file `target` (atomically), with `props` as its
    metadata."""
    import onnx

    with atomic_path(target) as tmp, torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated on every call (see the module
        # docstring), and GroupNorm's batch-size check warns that tracing fixes its shape test,
        # which only guards training.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            graph,
            inputs,
            str(tmp),
            dynamo=False,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
        )
        model = onnx.load(str(tmp))
        for key, value in props.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))


def _box_classifier_graph(
    state: dict[str, torch.Tensor], meta: ModelMeta
) -> tuple[nn.Module, tuple[torch.Tensor, ...], dict[str, dict[int, str]]]:
    """The box classifier's `BoxProbabilities` (image and boxes in, probabilities out), example
    inputs, and its dynamic axes."""
    from ewaste_vision.detect.box_classifier import load_box_classifier

    loaded = load_box_classifier(state, meta)
    assert loaded is not None
    graph = loaded.module.float().eval()
    image = torch.rand(1, 3, 90, 120)  # [1, 3, H, W]
    boxes = torch.tensor([[10.0, 12.0, 40.0, 30.0], [50.0, 20.0, 110.0, 80.0], [0.0, 0.0, 5.0, 7.0]])
    axes = {
        BOX_IMAGE: {2: "height", 3: "width"},
        BOX_BOXES: {0: "boxes"},
        PROBABILITIES: {0: "boxes"},
    }
    return graph, (image, boxes), axes


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
