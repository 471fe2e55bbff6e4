"""The fusion network as exported to ONNX: two image inputs in [0, 1], fused probabilities out."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ewaste_vision.fusion.model import TwoStreamFusion
from ewaste_vision.model_meta import ModelMeta
from ewaste_vision.models.normalise import Normalise

FUSION_INPUTS = ("rgb", "xray")
"""ONNX input names: RGB images [B, 3, S_rgb, S_rgb] and X-ray images [B, 3, S_xray, S_xray]."""


class FusionProbabilityGraph(nn.Module):
    """(RGB, X-ray) images in [0, 1], each at its stream's input size -> probabilities [B, C]."""

    def __init__(self, model: TwoStreamFusion, streams: dict[str, ModelMeta]) -> None:
        super().__init__()
        self.model = model.eval()
        self.normalise_rgb = Normalise(streams["rgb"].mean, streams["rgb"].std)
        self.normalise_xray = Normalise(streams["xray"].mean, streams["xray"].std)

    def forward(self, rgb: torch.Tensor, xray: torch.Tensor) -> torch.Tensor:
        logits = self.model(self.normalise_rgb(rgb), self.normalise_xray(xray))  # [B, C]
        return logits.float().softmax(dim=-1)


def fusion_graph(
    state: dict[str, torch.Tensor], meta: ModelMeta, source: Path
) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor], dict[str, dict[int, str]]]:
    """The graph to trace, example inputs and dynamic axes (the batch) for `export_onnx`."""
    from ewaste_vision.export.metadata import PROBABILITIES
    from ewaste_vision.fusion.predictor import load_fusion

    model, streams = load_fusion(state, meta, source)
    examples = tuple(
        torch.rand(2, 3, streams[m].image_size, streams[m].image_size) for m in FUSION_INPUTS
    )  # [B, 3, S, S] each
    axes = {name: {0: "batch"} for name in (*FUSION_INPUTS, PROBABILITIES)}
    return FusionProbabilityGraph(model, streams).eval(), (examples[0], examples[1]), axes
