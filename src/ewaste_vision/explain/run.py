"""`ewaste explain RUN PATHS... --out DIR`: heatmaps for the classes a trained model sees.

For every image: the classes to explain are chosen from the model's own probabilities (by default
the top 2 above the run's decision thresholds, as in 000), their maps are computed by the chosen
CAM method, and `OUT/<image-stem>/<class>.png` (one overlay per class) and `OUT/<image-stem>/panel.png`
(the image and all overlays, with a colour bar) are written. For a run with an iCAM head,
`OUT/<image-stem>/icam.png` also shows the crop chosen at each iteration over its CAM, and the
per-class maps are those of its first view (the whole image).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ewaste_vision.data.images import load_rgb
from ewaste_vision.errors import UnreadableImageError, UserError
from ewaste_vision.explain.gradcam import upsample_and_normalise
from ewaste_vision.explain.icam_panel import ICAM_PANEL_NAME, save_icam_panel
from ewaste_vision.explain.methods import class_activation_maps, get_cam_method
from ewaste_vision.explain.render import overlay_heatmap, save_panel, save_png
from ewaste_vision.inference import Predictor, expand_image_paths
from ewaste_vision.models.icam import IcamClassifier
from ewaste_vision.runs import ModelMeta

MULTILABEL_TASKS = ("multilabel",)
"""Tasks whose classes are chosen by per-class thresholds rather than by rank alone."""

DEFAULT_THRESHOLD = 0.5
"""Decision threshold of a multi-label class when the run stored none."""

PANEL_NAME = "panel"


@dataclass
class ImageExplanation:
    """What was explained for one image."""

    path: Path
    """The input image."""
    folder: Path
    """Where its PNGs were written."""
    classes: list[str]
    """The classes explained, in the order drawn."""
    probabilities: list[float]
    """The model's probability of each explained class."""
    files: list[Path] = field(default_factory=list)
    """The overlays, then the panel."""


class ExplainSummary(list[Path]):
    """The files `explain_paths` wrote (a list, so `len()` counts them), with what was explained."""

    def __init__(self, images: list[ImageExplanation], skipped: list[tuple[Path, str]], method: str) -> None:
        super().__init__(path for image in images for path in image.files)
        self.images = images
        """One entry per explained image."""
        self.skipped = skipped
        """(file, reason) for each image that could not be read."""
        self.method = method
        """The CAM method used."""


def explain_paths(
    run_dir: Path | str,
    paths: Sequence[Path | str],
    out_dir: Path | str,
    classes: str = "top2",
    method: str = "gradcam",
    shared_scale: bool = False,
    target_layer: str | None = None,
) -> ExplainSummary:
    """Write heatmaps of a trained run for image files and folders.

    Args:
        run_dir: a run directory with `model.pt`.
        paths: image files and folders (searched recursively).
        out_dir: where `<image-stem>/<class>.png` and `<image-stem>/panel.png` go.
        classes: `top2` (or `topN`): the N most probable classes, for multi-label runs only those
            above the run's per-class thresholds (the top 1 when none is); `all`; or a
            comma-separated list of class names.
        method: a CAM method (see `available_cam_methods()`).
        shared_scale: scale the maps of an image together, so their colours compare across classes;
            otherwise each map is scaled to its own peak.
        target_layer: module name inside the model to explain at (default: the backbone's last
            feature map, `BackboneSpec.cam_layer`).

    Returns:
        The files written (overlays, then the panel, per image), carrying `.images` (classes and
        probabilities explained per image) and `.skipped` (unreadable files and why).

    Raises:
        UserError: unknown method, class name or selection; no images found; bad run directory.
    """
    cam_method = get_cam_method(method)
    predictor = Predictor.from_run(run_dir, precision="32", compile="never")
    model, meta = predictor.model.eval(), predictor.meta
    icam = isinstance(model, IcamClassifier)
    selection = parse_class_selection(classes, meta.class_names)
    out = Path(out_dir)
    folders = _output_folders(expand_image_paths(paths))
    explained: list[ImageExplanation] = []
    skipped: list[tuple[Path, str]] = []
    for path, folder in folders.items():
        try:
            image = load_rgb(path)
        except UnreadableImageError as exc:
            skipped.append((path, exc.reason))
            continue
        tensor = predictor.transform(image).unsqueeze(0)  # [1, 3, S, S]
        # An iCAM head's probabilities come from all its views, not from the first view's head.
        if cam_method.all_classes_cheap and not icam:
            raw, logits = class_activation_maps(model, tensor, None, method, meta.backbone, target_layer)
            probs = predictor.task.probabilities(logits)[0]  # [N]
            chosen = choose_classes(probs, meta, selection)
            raw = raw[:, chosen]  # [1, K, h, w]
        else:
            with torch.no_grad():
                probs = predictor.task.probabilities(model(tensor).float())[0]  # [N]
            chosen = choose_classes(probs, meta, selection)
            raw, _ = class_activation_maps(model, tensor, chosen, method, meta.backbone, target_layer)
        size = (int(tensor.shape[-2]), int(tensor.shape[-1]))
        maps = upsample_and_normalise(raw, size, per_map=not shared_scale)[0]  # [K, S, S]
        names = [meta.class_names[k] for k in chosen]
        result = ImageExplanation(path, out / folder, names, [round(float(probs[k]), 4) for k in chosen])
        for name, heatmap in zip(names, maps, strict=True):
            target = result.folder / f"{_class_file_stem(name)}.png"
            result.files.append(save_png(overlay_heatmap(image, heatmap), target))
        titles = [f"{name}  p={p:.2f}" for name, p in zip(names, result.probabilities, strict=True)]
        if isinstance(model, IcamClassifier):
            with torch.no_grad():
                trace = model.trace(tensor)
            crops = result.folder / f"{ICAM_PANEL_NAME}.png"
            result.files.append(save_icam_panel(image, trace, meta.class_names, meta.image_size, crops))
        panel = result.folder / f"{PANEL_NAME}.png"
        label = f"{method}, iCAM view 0" if icam else method
        result.files.append(save_panel(image, maps, titles, panel, shared_scale, method_label=label))
        explained.append(result)
    return ExplainSummary(explained, skipped, method)


def parse_class_selection(classes: str, class_names: Sequence[str]) -> int | list[int]:
    """`topN` -> N; `all` -> every index; `a,b` -> the indices of those names (in that order).

    Raises:
        UserError: for an unknown class name or a malformed selection.
    """
    text = classes.strip()
    matched = re.fullmatch(r"top(\d+)", text.lower())
    if matched:
        count = int(matched.group(1))
        if count < 1:
            raise UserError(f"--classes {text}: ask for at least the top 1")
        return count
    if text.lower() == "all":
        return list(range(len(class_names)))
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in class_names]
    if unknown or not names:
        raise UserError(
            f"--classes {text!r}: unknown class {', '.join(unknown) or '(none given)'}; use top2, all, "
            f"or names from: {', '.join(class_names)}"
        )
    return list(dict.fromkeys(class_names.index(name) for name in names))


def choose_classes(probs: torch.Tensor, meta: ModelMeta, selection: int | list[int]) -> list[int]:
    """The class indices to explain for one image.

    Args:
        probs: the image's probabilities [N].
        meta: the run's metadata (task, thresholds in `extra["thresholds"]`).
        selection: from `parse_class_selection`: a count for top-N, or fixed indices.

    Returns:
        Class indices, most probable first for top-N.
    """
    if isinstance(selection, list):
        return selection
    order = torch.argsort(probs, descending=True, stable=True).tolist()
    if meta.task not in MULTILABEL_TASKS:
        return order[:selection]
    thresholds = meta.extra.get("thresholds") or [DEFAULT_THRESHOLD] * len(meta.class_names)
    above = [k for k in order if float(probs[k]) > float(thresholds[k])]
    return above[:selection] or order[:1]


def _output_folders(paths: Sequence[Path]) -> dict[Path, str]:
    # Two inputs with one stem (a/board.jpg, b/board.png) get board and board-2.
    folders: dict[Path, str] = {}
    used: set[str] = set()
    for path in paths:
        stem = _safe_name(path.stem) or "image"
        name, suffix = stem, 2
        while name in used:
            name, suffix = f"{stem}-{suffix}", suffix + 1
        used.add(name)
        folders[path] = name
    return folders


def _class_file_stem(class_name: str) -> str:
    name = _safe_name(class_name) or "class"
    return f"class-{name}" if name in (PANEL_NAME, ICAM_PANEL_NAME) else name


def _safe_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("._")
