"""Stage 3 of fusion: how far to trust each stream, fitted on the validation pairs.

Stage 2 fits the fusion layer on training pairs. There a stream that only memorises its own
training devices (a photo stream that cannot tell the two classes of a family apart) still looks
informative, so the fusion layer trusts it too much on new devices. This stage refits the fusion
layer on the validation pairs (devices no stream and no stage-2 step trained on), as a
non-negative combination of three experts' logits [B, C]:

    z = a_fusion * fusion(g_rgb, g_xray) + a_rgb * g_rgb + a_xray * g_xray

where `fusion` is the stage-2 layer and g are the two classification layers' logits. Adding a
stream's logits scaled by a is late fusion of its log-probabilities at temperature 1/a (softmax
ignores a per-sample shift), so (0, 0, a) is the X-ray stream alone, (1, 0, 0) the stage-2 fusion,
and after the fit each expert alone (weight 1) is tried too, so the result never scores a worse
validation objective than any of them. These are the validation pairs that also chose the stage-2
checkpoint, so the validation losses reported are optimistic; the test split stays untouched.
Three parameters on tens of pairs overfit little; a small ridge term keeps them finite when a
stream separates the validation pairs perfectly. The result folds into the same linear layer (weight
a_fusion * W + [a_rgb I, a_xray I], bias a_fusion * b), so saving, export and inference are unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ewaste_vision.fusion.model import TwoStreamFusion, stream_features

EXPERTS = ("fusion_layer", "rgb", "xray")
RIDGE = 1e-3
"""Penalty on the squared expert weights, added to the mean validation cross-entropy."""


@torch.no_grad()
def validation_logits(
    model: TwoStreamFusion, loader: DataLoader[Any], features: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both classification layers' logits [N, C] on the validation pairs, and the labels [N].

    `features`: the loader gives cached stream features (fast fusion) rather than images (slow).
    Runs on the device the model is on; the logits come back on the CPU.
    """
    model.eval()
    device = next(model.parameters()).device
    rgb, xray, labels = [], [], []
    for rgb_in, xray_in, targets in loader:
        rgb_in, xray_in = rgb_in.to(device), xray_in.to(device)
        if not features:
            rgb_in, xray_in = stream_features(model.rgb, rgb_in), stream_features(model.xray, xray_in)
        g_rgb, g_xray = model.stream_logits(rgb_in, xray_in)
        rgb.append(g_rgb.float().cpu())
        xray.append(g_xray.float().cpu())
        labels.append(targets.cpu())
    return torch.cat(rgb), torch.cat(xray), torch.cat(labels)


def fusion_layer_logits(
    weight: torch.Tensor, bias: torch.Tensor, g_rgb: torch.Tensor, g_xray: torch.Tensor
) -> torch.Tensor:
    """A fusion layer's logits [N, C] from its weight [C, 2C] and bias [C] (any device: the result
    is on the streams' logits' device) and the two classification layers' logits [N, C]."""
    return F.linear(torch.cat([g_rgb, g_xray], dim=1), weight.to(g_rgb), bias.to(g_rgb))


def expert_logits(fusion: torch.nn.Linear, g_rgb: torch.Tensor, g_xray: torch.Tensor) -> torch.Tensor:
    """The three experts' logits [3, N, C] on the CPU: the fusion layer, the RGB and the X-ray layer."""
    with torch.no_grad():
        fused = fusion_layer_logits(fusion.weight.detach(), fusion.bias.detach(), g_rgb, g_xray)
    return torch.stack([fused, g_rgb, g_xray])


def fit_expert_weights(experts: torch.Tensor, labels: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
    """Non-negative weights [3] minimising mean cross-entropy of sum_k w_k * experts[k] + ridge |w|^2.

    The loss is convex in w; w = softplus(u) keeps it non-negative with a gradient everywhere (an
    exp overflowed where L-BFGS's line search probed far along a flat direction, and a clamp would
    leave a weight stuck at its bound). Starts at the stage-2 fusion, about (1, 0.02, 0.02). The
    fit is compared with each expert alone at weight 1, and the best finite objective wins, so the
    result is never worse on these pairs than any of them.
    """
    experts, labels = experts.double(), labels.long()

    def objective(weights: torch.Tensor) -> torch.Tensor:
        logits = torch.einsum("k,knc->nc", weights, experts)
        return F.cross_entropy(logits, labels) + ridge * (weights**2).sum()

    start = torch.tensor([1.0, 0.02, 0.02], dtype=torch.float64)
    u = torch.log(torch.expm1(start)).requires_grad_(True)  # softplus(u) = start
    optimiser = torch.optim.LBFGS([u], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = objective(F.softplus(u))
        value.backward()
        return value

    optimiser.step(loss)
    candidates = [F.softplus(u.detach()), *torch.eye(len(experts), dtype=torch.float64)]
    with torch.no_grad():
        values = [float(objective(c)) for c in candidates]
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    best = min(finite)[1] if finite else 1  # 1: the stage-2 layer alone, (1, 0, 0)
    return candidates[best].float()


def calibrate_fusion(model: TwoStreamFusion, loader: DataLoader[Any], features: bool) -> dict[str, Any]:
    """Refit `model.fusion` on the validation pairs in `loader` (see the module docstring).

    Returns:
        What was fitted, for the run's metadata: the expert weights, each stream's resulting
        weight in the fusion layer (its block's mean diagonal), validation loss and accuracy of
        the stage-2 layer and of the calibrated one, and the stage-2 layer itself.
    """
    g_rgb, g_xray, labels = validation_logits(model, loader, features)
    experts = expert_logits(model.fusion, g_rgb, g_xray)  # [3, N, C]
    weights = fit_expert_weights(experts, labels)
    stage2 = {
        "weight": model.fusion.weight.detach().cpu().clone(),
        "bias": model.fusion.bias.detach().cpu().clone(),
    }
    num_classes = g_rgb.shape[1]
    on_layer = weights.to(model.fusion.weight.device, model.fusion.weight.dtype)
    eye = torch.eye(num_classes, device=on_layer.device, dtype=on_layer.dtype)
    with torch.no_grad():
        model.fusion.weight.mul_(on_layer[0]).add_(torch.cat([on_layer[1] * eye, on_layer[2] * eye], dim=1))
        model.fusion.bias.mul_(on_layer[0])
    calibrated = torch.einsum("k,knc->nc", weights, experts)

    def scores(logits: torch.Tensor) -> dict[str, float]:
        return {
            "loss": round(float(F.cross_entropy(logits, labels)), 4),
            "accuracy": round(float((logits.argmax(dim=1) == labels).float().mean()), 4),
        }

    block = model.fusion.weight.detach().cpu()
    return {
        "method": f"validation expert weights (fusion layer, RGB layer, X-ray layer), ridge {RIDGE}",
        "val_pairs": len(labels),
        "weights": {name: round(float(w), 4) for name, w in zip(EXPERTS, weights, strict=True)},
        "stream_weight": {
            "rgb": round(float(block[:, :num_classes].diagonal().mean()), 4),
            "xray": round(float(block[:, num_classes:].diagonal().mean()), 4),
        },
        "val": {
            "stage2_fusion": scores(experts[0]),
            "rgb_layer": scores(experts[1]),
            "xray_layer": scores(experts[2]),
            "calibrated": scores(calibrated),
        },
        "stage2_fusion": {k: v.tolist() for k, v in stage2.items()},
    }
