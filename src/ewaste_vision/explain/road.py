"""ROAD (Rong et al., 2022) as pytorch-grad-cam's `ROADCombined` computes it, in less time.

pytorch-grad-cam's noisy linear imputer fills a `scipy.sparse.lil_matrix` entry list by entry list
and its metric runs the model on the unperturbed images once per percentile and direction. Here
the same system is built straight in compressed-column form and the unperturbed logits are taken
once. The matrix, the right-hand side, the solver (`spsolve`, same ordering) and the order of the
noise draws from torch's global generator are the same, so the scores are the same to the bit
(`tests/test_road.py` compares them with pytorch-grad-cam's own on the same seed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import spsolve

NEIGHBOUR_WEIGHTS: tuple[tuple[tuple[int, int], float], ...] = (
    ((1, 1), 1 / 12),
    ((0, 1), 1 / 6),
    ((-1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((0, -1), 1 / 6),
    ((-1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((-1, 0), 1 / 6),
)
"""ROAD's 8-neighbourhood weights, in the order pytorch-grad-cam visits them (the order fixes the
rounding of each pixel's weight sum at the image border)."""
IMPUTATION_NOISE = 0.01
"""Absolute noise added to imputed values (ROAD's default)."""


def imputation_system(mask: np.ndarray, image: np.ndarray) -> tuple[csc_matrix, np.ndarray]:
    """The linear system whose solution fills the pixels where `mask` is 0.

    Each missing pixel equals the weighted mean of its neighbours inside the image; known
    neighbours go to the right-hand side.

    Args:
        mask: [H, W], 1 where the pixel is kept, 0 where it is imputed.
        image: [C, H, W] values.

    Returns:
        The system matrix [M, M] (M missing pixels, row-major order) and the right-hand side [M, C].
    """
    height, width = mask.shape
    keep = mask.reshape(-1)
    flat = image.reshape((image.shape[0], -1))
    missing = np.flatnonzero(keep == 0)
    unknown_index = np.zeros(keep.size, dtype=int)
    unknown_index[missing] = np.arange(missing.size)
    rhs = np.zeros((missing.size, image.shape[0]))
    weight_sum = np.ones(missing.size)
    rows, columns, values = [], [], []
    row_of, column_of = missing // width, missing % width
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS:
        rows_in = (row_of + dy >= 0) & (row_of + dy < height)
        inside = rows_in & (column_of + dx >= 0) & (column_of + dx < width)
        equations = np.flatnonzero(inside)
        neighbours = missing[inside] + dy * width + dx
        known = keep[neighbours] > 0.5
        rhs[equations[known], :] -= weight * flat[:, neighbours[known]].T
        free = keep[neighbours] < 0.5
        rows.append(equations[free])
        columns.append(unknown_index[neighbours[free]])
        values.append(np.full(int(free.sum()), weight))
        outside = np.flatnonzero(~inside)
        weight_sum[outside] = weight_sum[outside] - weight
    diagonal = np.arange(missing.size)
    rows.append(diagonal)
    columns.append(diagonal)
    values.append(-weight_sum)
    matrix = csc_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))),
        shape=(missing.size, missing.size),
    )
    return matrix, rhs


def impute(image: torch.Tensor, mask: torch.Tensor, noise: float = IMPUTATION_NOISE) -> torch.Tensor:
    """`image` [C, H, W] with the pixels where `mask` [H, W] is 0 filled by noisy linear imputation.

    Draws the noise from torch's global generator.
    """
    flat = image.reshape(image.shape[0], -1)
    missing = np.flatnonzero(mask.reshape(-1).numpy() == 0)
    matrix, rhs = imputation_system(mask.numpy(), image.numpy())
    solution = torch.tensor(spsolve(matrix, rhs), dtype=torch.float)
    filled = flat.clone()
    filled[:, missing] = solution.t() + noise * torch.randn_like(solution.t())
    return filled.reshape_as(image)


def road_combined(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: np.ndarray,
    classes: Sequence[int],
    percentiles: Sequence[int],
) -> np.ndarray:
    """ROAD of each image's map for its class: (LeRF change - MoRF change) / 2, averaged over percentiles.

    Args:
        model: returns logits [N, K].
        images: [N, C, H, W] model inputs.
        maps: float32 heatmaps [N, H, W].
        classes: per image, the logit scored.
        percentiles: thresholds; at p, MoRF imputes the pixels at or above the map's p-th
            percentile and LeRF those at or below the (100 - p)-th of the map.

    Returns:
        float32 [N], higher is better.
    """
    picked = torch.arange(len(classes)), torch.as_tensor(list(classes))
    with torch.no_grad():
        original = model(images)[picked].cpu().numpy().astype(np.float32)

    def changes(ranked: list[torch.Tensor], percentile: int) -> np.ndarray:
        perturbed = []
        for index, relevance in enumerate(ranked):
            threshold = np.percentile(relevance.numpy(), percentile)
            keep = (relevance < threshold).to(torch.float32)
            perturbed.append(impute(images[index].cpu(), keep).to(images.device).unsqueeze(0))
        with torch.no_grad():
            after = model(torch.cat(perturbed))[picked].cpu().numpy().astype(np.float32)
        change: np.ndarray = after - original
        return change

    most_first = [torch.from_numpy(m) for m in maps]
    least_first = [1 - m for m in most_first]
    lerf = np.mean(np.asarray([changes(least_first, p) for p in percentiles], dtype=np.float32), axis=0)
    morf = np.mean(np.asarray([changes(most_first, p) for p in percentiles], dtype=np.float32), axis=0)
    road: np.ndarray = (lerf - morf) / 2
    return road
