"""Grad-CAM for every class from one backbone pass.

Grad-CAM at the last feature map A [B, C, h, w] weights each channel by the mean over positions of
d logit_k / d A (Selvaraju et al., 2017). In an `ImageClassifier` everything after A is the head
(global average pooling, dropout, linear), so those gradients need a backward pass through the head
alone: the backbone runs once, without a graph, and all K classes are differentiated together in one
batched backward (`is_grads_batched`). For the current head the result has the closed form
alpha[k, c] = W[k, c] / (h * w); the backward is kept so that any head on A stays correct.

The maps equal pytorch-grad-cam's `GradCAM(model, [layer])` with `ClassifierOutputTarget(k)` on the
same layer (tested to 1e-3 on normalised maps), at the cost of one inference pass instead of one
forward and full backward per class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ewaste_vision.models.classifier import ImageClassifier

NORMALISE_EPS = 1e-7
"""Added to the maximum before dividing, as pytorch-grad-cam's `scale_cam_image` does: an all-zero
map stays zero instead of becoming NaN."""


def gradcam_from_features(
    model: ImageClassifier, feature_map: torch.Tensor, classes: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps of `classes` from a feature map the backbone already computed.

    Args:
        model: the classifier, in eval mode (dropout must be off for exact gradients).
        feature_map: `model.forward_features(images)`, shape [B, C, h, w]; any dtype (bf16 from
            autocast is promoted to float32).
        classes: class indices to explain; all classes when None.

    Returns:
        (cams [B, K, h, w] float32, ReLU'd, not upsampled nor normalised; logits [B, N] float32).

    Raises:
        ValueError: if the model is in training mode or a class index is out of range.
    """
    if model.training:
        raise ValueError("Grad-CAM needs the model in eval mode (dropout off); call model.eval() first")
    features = feature_map.detach().float().requires_grad_(True)  # [B, C, h, w]
    with torch.enable_grad():
        logits = model.forward_head(model.pool_features(features)).float()  # [B, N]
    num_classes = logits.shape[1]
    chosen = list(range(num_classes)) if classes is None else [int(k) for k in classes]
    if any(k < 0 or k >= num_classes for k in chosen):
        raise ValueError(f"class indices {chosen} out of range for a model with {num_classes} classes")
    if not chosen:
        batch, _, height, width = features.shape
        return features.new_zeros(batch, 0, height, width), logits.detach()
    # One one-hot cotangent per class: row k selects logit chosen[k] of every image.
    cotangents = torch.zeros(len(chosen), *logits.shape, dtype=logits.dtype)  # [K, B, N]
    cotangents[torch.arange(len(chosen)), :, torch.tensor(chosen)] = 1.0
    (gradients,) = torch.autograd.grad(
        logits, features, grad_outputs=cotangents, is_grads_batched=True
    )  # [K, B, C, h, w]
    weights = gradients.mean(dim=(3, 4))  # [K, B, C]: Grad-CAM's channel weights alpha
    cams = torch.einsum("kbc,bchw->bkhw", weights, features.detach())  # [B, K, h, w]
    return cams.relu(), logits.detach()


def all_class_gradcam(
    model: ImageClassifier, images: torch.Tensor, classes: Sequence[int] | None = None
) -> torch.Tensor:
    """Grad-CAM maps at the last feature map for many classes, from one backbone pass.

    Args:
        model: the classifier, in eval mode.
        images: normalised images [B, 3, S, S].
        classes: class indices to explain; all classes when None.

    Returns:
        cams [B, K, h, w] (float32, ReLU'd, at the feature map's resolution); pass them to
        `upsample_and_normalise` for display.
    """
    with torch.no_grad():
        feature_map = model.forward_features(images)  # [B, C, h, w]
    cams, _ = gradcam_from_features(model, feature_map, classes)
    return cams


def upsample_and_normalise(
    cams: torch.Tensor, size: int | tuple[int, int], per_map: bool = True
) -> torch.Tensor:
    """Resize raw maps to the input size and scale them to [0, 1].

    With `per_map` every map is min-max scaled on its own before and after a bilinear resize, as
    pytorch-grad-cam's `scale_cam_image` does (its `cv2.resize` with linear interpolation samples at
    pixel centres like `align_corners=False`). Otherwise one min and max are shared by all K maps of
    an image: the shared colour scale, under which a weak class shows weak.

    Args:
        cams: raw maps [B, K, h, w].
        size: output side S, or (height, width).
        per_map: scale each map alone (True) or the K maps of an image together (False).

    Returns:
        maps [B, K, H, W] float32 in [0, 1].
    """
    target = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    dims = (2, 3) if per_map else (1, 2, 3)
    maps = _min_max(cams.float(), dims)
    if cams.shape[1] == 0:
        return maps.new_zeros(*cams.shape[:2], *target)
    maps = F.interpolate(maps, size=target, mode="bilinear", align_corners=False)  # [B, K, H, W]
    return _min_max(maps, dims)


def _min_max(maps: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    if maps.numel() == 0:
        return maps
    shifted = maps - maps.amin(dim=dims, keepdim=True)
    return shifted / (NORMALISE_EPS + shifted.amax(dim=dims, keepdim=True))
