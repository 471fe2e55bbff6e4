"""Multi-label losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def asymmetric_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma_negative: float = 4.0,
    gamma_positive: float = 0.0,
    margin: float = 0.05,
) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al., ICCV 2021) for multi-label classification.

    Most labels of a board are negatives; focusing down-weights easy negatives, and the probability
    margin discards very easy ones entirely, so the rare positives are not drowned out.

    Args:
        logits: [B, C].
        targets: multi-hot [B, C].
        gamma_negative: focusing exponent for negatives.
        gamma_positive: focusing exponent for positives.
        margin: probability shift applied to negatives.
    """
    targets = targets.float()
    probs = torch.sigmoid(logits.float())  # [B, C]
    shifted = (probs - margin).clamp(min=0) if margin > 0 else probs
    loss_positive = targets * (1 - probs).pow(gamma_positive) * F.logsigmoid(logits.float())
    loss_negative = (1 - targets) * shifted.pow(gamma_negative) * torch.log((1 - shifted).clamp(min=1e-8))
    return -(loss_positive + loss_negative).sum() / logits.shape[0]


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits, averaged over images and classes (as in 000)."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
