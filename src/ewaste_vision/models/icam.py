"""Iterative Class Activation Mapping (iCAM, source document 002, Sec. III-B): a classifier head
that looks again, closer, at the part of the image its own class activation map points to.

Iteration i (0 .. N-1) runs the backbone on view V_i (V_0 is the input image) and pools its
feature map. Unless it is the last, the class activation map of the class the classifier predicts
from V_i, CAM(x, y) = sum_k W[c, k] * A_k(x, y) (Zhou et al., 2016; 002's Eq. 1), picks the
dominant cell, and a square around it (side `crop_fraction` of V_i's side, moved inward so it stays
inside V_i) is resampled bilinearly to the input size: that is V_{i+1}. The N pooled feature
vectors are combined by the feature aggregator (`weighted`: learned weights, softmax-normalised;
`mean`; `sum`; 002's Eq. 2) and classified by one linear layer, the same layer whose weights make
the CAMs.

What `iterations` counts: backbone passes, so N iterations give N feature sets and N - 1 crops
(N = 1 is the plain classifier). 002's Table IV times grow by one backbone pass per step of n
(20, 31, 51 ms for n = 2, 3, 5), which is this count.

Choices made here, and why:
- Each view is cut from the *original* image by a box composed over the iterations, not from the
  previous view: the same region as 002's crop-of-a-crop, resampled once instead of N - 1 times.
- The arg-max is taken on the feature-map grid and placed at that cell's centre. 002 upsamples the
  map first; a bilinear upsampling peaks at a grid node, so the centre of the same cell is chosen
  (up to ties), at a fraction of the cost.
- Views are sampled with `grid_sample` on a grid built from the box with plain arithmetic
  (`affine_grid` has no ONNX form before opset 20), so the network exports to ONNX (opset 17) whole.
- The CAM class is the predicted one, in training too: the forward pass never sees labels, so
  training and inference crop alike.

For the fusion stream (002's RGB-X) the two halves of the head are public:
`IcamClassifier.aggregated_features(images) -> [B, F]` (the aggregator's output, before dropout)
and `IcamClassifier.classifier` (the `nn.Linear` [F -> classes]); `forward` is
`classifier(dropout(aggregated_features(images)))`. `trace(images)` also returns every view's box
and CAM, for `ewaste explain`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ewaste_vision.model_meta import AGGREGATES
from ewaste_vision.models.classifier import ImageClassifier


@dataclass
class IcamTrace:
    """Everything one iCAM forward pass decided, for explanations."""

    logits: torch.Tensor
    """[B, num_classes]."""
    boxes: torch.Tensor
    """[B, N, 4]: (x0, y0, x1, y1) of each iteration's view, in pixels of the input image."""
    cams: list[torch.Tensor]
    """N maps [B, h, w] (float32, raw): the CAM of view i for `classes[:, i]`."""
    classes: torch.Tensor
    """[B, N]: the class predicted from each view alone (whose CAM chose the next crop)."""


class FeatureAggregator(nn.Module):
    """Pooled features of N iterations [N, B, F] -> one vector per image [B, F]."""

    def __init__(self, iterations: int, mode: str) -> None:
        super().__init__()
        if mode not in AGGREGATES:
            raise ValueError(f"unknown aggregate {mode!r}; choose one of {AGGREGATES}")
        self.mode = mode
        # Zeros: the softmax starts as the mean, so an untrained aggregator changes nothing.
        self.weight_logits = nn.Parameter(torch.zeros(iterations)) if mode == "weighted" else None

    def weights(self) -> torch.Tensor:
        """The weight of each iteration [N] (softmax for `weighted`; 1/N or 1 otherwise)."""
        if self.weight_logits is not None:
            return self.weight_logits.softmax(dim=0)
        raise ValueError(f"the {self.mode} aggregate has no learned weights")

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.mode == "sum":
            return pooled.sum(dim=0)  # [B, F]
        if self.mode == "mean":
            return pooled.mean(dim=0)
        weights = self.weights().to(pooled.dtype)  # [N]
        return torch.einsum("n,nbf->bf", weights, pooled)


class IcamClassifier(ImageClassifier):
    """An `ImageClassifier` whose forward pass is iCAM's N looks (see the module docstring).

    `forward_features`, `pool_features` and `forward_head` keep their meaning for the first view,
    the whole image: the `linear` strategy's cached features and the fast Grad-CAM use them.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        dropout: float = 0.2,
        iterations: int = 3,
        aggregate: str = "weighted",
        crop_fraction: float = 0.5,
    ) -> None:
        super().__init__(backbone, num_classes, dropout)
        if iterations < 1 or not 0.0 < crop_fraction < 1.0:
            raise ValueError(
                f"need iterations >= 1 and 0 < crop_fraction < 1, got {iterations}, {crop_fraction}"
            )
        self.iterations = iterations
        self.crop_fraction = crop_fraction
        self.aggregator = FeatureAggregator(iterations, aggregate)

    @property
    def classifier(self) -> nn.Linear:
        """The linear layer [F -> classes]: it classifies the aggregate and weights the CAMs."""
        return self.head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify_looks(self.look_features(images))  # [B, num_classes]

    def aggregated_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] (normalised) -> the aggregated pooled features [B, F]."""
        return self.aggregator(self.look_features(images))

    def look_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] (normalised) -> each look's pooled features [N, B, F], before the
        aggregator: what a frozen backbone's iCAM training caches (`training.icam_looks`)."""
        pooled, _, _, _ = self._look(images, keep_maps=False)
        return pooled

    def classify_looks(self, looks: torch.Tensor) -> torch.Tensor:
        """Pooled features of the N looks [N, B, F] -> logits [B, num_classes]: `forward` after
        the backbone passes."""
        return self.forward_head(self.aggregator(looks))

    def trace(self, images: torch.Tensor) -> IcamTrace:
        """The forward pass with its views' boxes and CAMs (the last view's CAM too)."""
        pooled, boxes, cams, classes = self._look(images, keep_maps=True)
        logits = self.forward_head(self.aggregator(pooled))
        return IcamTrace(logits, boxes, cams, classes)

    def _look(
        self, images: torch.Tensor, keep_maps: bool
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(pooled [N, B, F], boxes [B, N, 4] in pixels, CAMs, classes [B, N])."""
        batch, side = images.shape[0], images.shape[-1]
        # The current view as (left, top, side) in fractions of the input image.
        left = images.new_zeros(batch, dtype=torch.float32)
        top = images.new_zeros(batch, dtype=torch.float32)
        extent = images.new_ones(batch, dtype=torch.float32)
        pooled, boxes, cams, classes = [], [], [], []
        view = images
        for iteration in range(self.iterations):
            feature_map = self.forward_features(view)  # [B, F, h, w]
            pooled.append(self.pool_features(feature_map))  # [B, F]
            boxes.append(torch.stack([left, top, left + extent, top + extent], dim=1) * side)  # [B, 4]
            last = iteration == self.iterations - 1
            if last and not keep_maps:
                break
            with torch.no_grad():  # where to look next is a choice, not a path for gradients
                predicted = self.head(pooled[-1]).argmax(dim=1)  # [B]
                cam = torch.einsum("bf,bfhw->bhw", self.head.weight[predicted].float(), feature_map.float())
            cams.append(cam)
            classes.append(predicted)
            if last:
                break
            left, top, extent = self._next_view(cam, left, top, extent)
            view = crop_and_resize(images, left, top, extent)  # [B, 3, S, S]
        chosen = torch.stack(classes, dim=1) if classes else images.new_zeros(batch, 0, dtype=torch.long)
        return torch.stack(pooled), torch.stack(boxes, dim=1), cams, chosen

    def _next_view(
        self, cam: torch.Tensor, left: torch.Tensor, top: torch.Tensor, extent: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The square around `cam`'s peak inside the current view, in fractions of the input."""
        height, width = cam.shape[-2], cam.shape[-1]
        peak = cam.flatten(1).argmax(dim=1)  # [B]
        row, column = peak // width, peak % width
        half = self.crop_fraction / 2
        # The peak cell's centre, in fractions of the view, moved inward so the crop stays inside.
        centre_x = ((column.float() + 0.5) / width).clamp(half, 1.0 - half)
        centre_y = ((row.float() + 0.5) / height).clamp(half, 1.0 - half)
        return (
            left + extent * (centre_x - half),
            top + extent * (centre_y - half),
            extent * self.crop_fraction,
        )


def crop_and_resize(
    images: torch.Tensor, left: torch.Tensor, top: torch.Tensor, extent: torch.Tensor
) -> torch.Tensor:
    """The square (left, top, side `extent`; fractions of the image) of each image, resampled
    bilinearly to the image's own size: [B, C, S, S] -> [B, C, S, S].

    Output pixel j samples the input at fraction left + extent * (j + 0.5) / S, the
    `align_corners=False` convention of `grid_sample`, so the whole box (and nothing outside it)
    is seen.
    """
    size = images.shape[-1]
    steps = (torch.arange(size, device=images.device, dtype=torch.float32) + 0.5) / size  # [S]
    grid_x = 2.0 * (left[:, None] + extent[:, None] * steps[None, :]) - 1.0  # [B, S]
    grid_y = 2.0 * (top[:, None] + extent[:, None] * steps[None, :]) - 1.0  # [B, S]
    grid = torch.stack(
        [grid_x[:, None, :].expand(-1, size, -1), grid_y[:, :, None].expand(-1, -1, size)], dim=-1
    )  # [B, S, S, 2], (x, y) per output pixel
    return nn.functional.grid_sample(
        images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )
