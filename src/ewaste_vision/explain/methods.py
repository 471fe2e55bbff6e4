"""One registry of CAM methods, read by the CLI, the app and the docs.

`gradcam` is the toolkit's own all-class Grad-CAM (`explain.gradcam`); the others are
pytorch-grad-cam's, behind one adapter. Every method returns raw maps (ReLU'd, at the target layer's
resolution) and the logits, so upsampling and the per-map or shared colour scale are applied the
same way for all of them (`upsample_and_normalise`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ewaste_vision.errors import UserError
from ewaste_vision.explain.gradcam import gradcam_from_features
from ewaste_vision.models.classifier import ImageClassifier
from ewaste_vision.models.registry import get_backbone_spec

log = logging.getLogger(__name__)

CamFunction = Callable[
    [ImageClassifier, torch.Tensor, Sequence[int], nn.Module], tuple[torch.Tensor, torch.Tensor]
]
"""(model, images [B, 3, S, S], classes (K), target layer) -> (raw maps [B, K, h, w], logits [B, N])."""


@dataclass(frozen=True)
class CamMethod:
    """A way of turning a classifier's decision into a heatmap."""

    name: str
    """Registry name, as typed after `--method`."""
    compute: CamFunction
    """Computes raw maps and logits; see `CamFunction`."""
    summary: str
    """One line for help texts."""
    all_classes_cheap: bool = False
    """True when maps for every class cost about one forward pass (the fast Grad-CAM), so callers
    may compute them all and choose classes afterwards."""
    slow: bool = False
    """True when the method runs one forward pass per channel of the target layer."""


_METHODS: dict[str, CamMethod] = {}


def register_cam_method(method: CamMethod) -> CamMethod:
    """Add `method` to the registry; a second registration of one name is a programming error."""
    if method.name in _METHODS:
        raise ValueError(f"CAM method {method.name!r} is registered twice")
    _METHODS[method.name] = method
    return method


def available_cam_methods() -> list[str]:
    """Registered CAM method names, in registration order."""
    return list(_METHODS)


def get_cam_method(name: str) -> CamMethod:
    """The method registered under `name`, or a `UserError` that lists the choices."""
    try:
        return _METHODS[name]
    except KeyError:
        raise UserError(f"unknown CAM method {name!r}; choose one of: {', '.join(_METHODS)}") from None


def default_target_layer(backbone: str) -> str:
    """Name (inside an `ImageClassifier`) of the module whose output is the last feature map."""
    return f"backbone.{get_backbone_spec(backbone).cam_layer}"


def resolve_target_layer(model: ImageClassifier, backbone: str, target_layer: str | None = None) -> nn.Module:
    """The module a CAM method hooks: `target_layer` (a module name inside `model`, such as
    `backbone.body.layer3`) or else the backbone's registered last feature map."""
    name = target_layer or default_target_layer(backbone)
    try:
        return model.get_submodule(name)
    except AttributeError:
        hint = ", ".join(n for n, _ in list(model.named_modules())[1:6])
        raise UserError(
            f"no module {name!r} in this {backbone} classifier; give a module name inside the model "
            f"(for example {default_target_layer(backbone)!r}; names start: {hint}, ...)"
        ) from None


def class_activation_maps(
    model: ImageClassifier,
    images: torch.Tensor,
    classes: Sequence[int] | None,
    method: str = "gradcam",
    backbone: str = "",
    target_layer: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw CAMs of `classes` for a batch, by any registered method.

    Args:
        model: the classifier; it is put in eval mode.
        images: normalised images [B, 3, S, S], float32.
        classes: class indices to explain (the same for every image); all classes when None.
        method: a name from `available_cam_methods()`.
        backbone: the registered backbone of `model` (`meta.backbone`), which names the default
            target layer; not needed when `target_layer` is given.
        target_layer: a module name inside `model` overriding the default.

    Returns:
        (maps [B, K, h, w] float32, ReLU'd, at the target layer's resolution; logits [B, N]).
    """
    cam_method = get_cam_method(method)
    if not backbone and not target_layer:
        raise ValueError("give the model's backbone name or a target layer")
    model.eval()
    layer = resolve_target_layer(model, backbone, target_layer)
    if classes is None:
        classes = range(int(model.head.out_features))
    return cam_method.compute(model, images, list(classes), layer)


def _fast_gradcam(
    model: ImageClassifier, images: torch.Tensor, classes: Sequence[int], layer: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        with torch.no_grad():
            feature_map = model.forward_features(images)  # [B, C, h, w]
    finally:
        handle.remove()
    if captured and captured[-1] is feature_map:
        return gradcam_from_features(model, feature_map, classes)
    # The head-only backward is exact only at the last feature map; elsewhere take the full path.
    log.info("target layer is not the last feature map; Grad-CAM runs a full backward per class")
    return _run_pytorch_grad_cam(_grad_cam_classes()["GradCAM"], model, images, classes, layer)


def _grad_cam_classes() -> dict[str, Any]:
    import pytorch_grad_cam

    return {name: getattr(pytorch_grad_cam, name) for name in dir(pytorch_grad_cam)}


@contextmanager
def _hooks_released(cam: Any) -> Iterator[Any]:
    # pytorch-grad-cam's own `__exit__` swallows IndexError (an out-of-range class would pass
    # silently), so hooks are released here and every exception propagates.
    try:
        yield cam
    finally:
        cam.activations_and_grads.release()


def _run_pytorch_grad_cam(
    cam_class: type, model: ImageClassifier, images: torch.Tensor, classes: Sequence[int], layer: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    num_classes = int(model.head.out_features)
    if any(k < 0 or k >= num_classes for k in classes):
        raise ValueError(f"class indices {list(classes)} out of range for a model with {num_classes} classes")

    class RawMaps(cam_class):
        """Keeps the map before pytorch-grad-cam's per-map scaling, so scaling is ours to choose."""

        raw: list[np.ndarray]

        def get_cam_image(self, *args: Any, **kwargs: Any) -> np.ndarray:
            cam = super().get_cam_image(*args, **kwargs)
            self.raw.append(np.maximum(cam, 0))  # [B, h, w]
            return cam

    extra: dict[str, Any] = {}
    if cam_class.__name__ == "AblationCAM":
        from pytorch_grad_cam.ablation_layer import AblationLayer

        extra["ablation_layer"] = AblationLayer()  # its default argument is one instance shared by all
    maps: list[np.ndarray] = []
    logits = torch.zeros(images.shape[0], num_classes)
    with _hooks_released(RawMaps(model, [layer], **extra)) as cam:
        for k in classes:
            cam.raw = []
            cam(input_tensor=images, targets=[ClassifierOutputTarget(k)] * images.shape[0])
            maps.append(cam.raw[-1])
            logits = cam.outputs.detach().float()
    model.zero_grad(set_to_none=True)  # the full backward left gradients on every parameter
    if not maps:
        return torch.zeros(images.shape[0], 0, 1, 1), logits
    return torch.from_numpy(np.stack(maps, axis=1)).float(), logits  # [B, K, h, w], [B, N]


def _adapter(class_name: str) -> CamFunction:
    def compute(
        model: ImageClassifier, images: torch.Tensor, classes: Sequence[int], layer: nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return _run_pytorch_grad_cam(_grad_cam_classes()[class_name], model, images, classes, layer)

    return compute


register_cam_method(
    CamMethod(
        "gradcam",
        _fast_gradcam,
        "Grad-CAM, every class from one backbone pass (equals pytorch-grad-cam's GradCAM)",
        all_classes_cheap=True,
    )
)
for _name, _class_name, _summary, _slow in (
    ("gradcam++", "GradCAMPlusPlus", "Grad-CAM++: second-order weights, better for several objects", False),
    ("xgradcam", "XGradCAM", "XGrad-CAM: gradients weighted by the normalised activations", False),
    ("layercam", "LayerCAM", "Layer-CAM: positive gradients at every position, finer maps", False),
    ("hirescam", "HiResCAM", "HiResCAM: gradient times activation elementwise, then summed", False),
    ("gradcamelementwise", "GradCAMElementWise", "Grad-CAM with ReLU on each elementwise product", False),
    ("eigencam", "EigenCAM", "Eigen-CAM: first principal component of the features (class-agnostic)", False),
    ("eigengradcam", "EigenGradCAM", "first principal component of gradient times activation", False),
    ("kpcacam", "KPCA_CAM", "kernel PCA of the features (class-agnostic)", False),
    ("fem", "FEM", "Feature Explanation Method: channels with unusually high mean (class-agnostic)", False),
    ("shapleycam", "ShapleyCAM", "Shapley-CAM: gradient and Hessian-vector product weights", False),
    ("randomcam", "RandomCAM", "random channel weights: a sanity-check baseline", False),
    ("scorecam", "ScoreCAM", "Score-CAM: one forward per channel, masked input (slow)", True),
    ("ablationcam", "AblationCAM", "Ablation-CAM: one forward per channel, ablated (slow)", True),
):
    register_cam_method(CamMethod(_name, _adapter(_class_name), _summary, slow=_slow))
