"""Our ROAD gives pytorch-grad-cam's `ROADCombined` scores exactly, on the same seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined, neighbors_weights
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from scipy.sparse import csc_matrix

from ewaste_vision.explain.road import NEIGHBOUR_WEIGHTS, imputation_system, road_combined
from ewaste_vision.models.classifier import build_classifier


def test_the_imputation_system_is_pytorch_grad_cams_entry_for_entry() -> None:
    assert list(NEIGHBOUR_WEIGHTS) == neighbors_weights
    rng = np.random.default_rng(0)
    image = rng.standard_normal((3, 17, 23)).astype(np.float32)
    for share in (0.1, 0.5, 0.9):
        mask = np.float32(rng.random((17, 23)) > share)
        mask[0, :3] = 0  # missing pixels on the border and in a corner
        mask[-1, -1] = 0
        theirs, their_rhs = NoisyLinearImputer.setup_sparse_system(mask, image, list(NEIGHBOUR_WEIGHTS))
        theirs = csc_matrix(theirs)
        ours, our_rhs = imputation_system(mask, image)
        assert np.array_equal(ours.indptr, theirs.indptr) and np.array_equal(ours.indices, theirs.indices)
        assert np.array_equal(ours.data, theirs.data)
        assert np.array_equal(our_rhs, their_rhs)


def test_road_scores_equal_pytorch_grad_cams_bit_for_bit() -> None:
    torch.manual_seed(0)
    model, _ = build_classifier("tiny", 3, pretrained=False)
    model.eval()
    images = torch.randn(3, 3, 24, 24)
    smooth = torch.nn.functional.interpolate(torch.rand(3, 1, 4, 4), size=(24, 24), mode="bilinear")
    maps = smooth[:, 0].numpy().astype(np.float32)
    classes = [0, 2, 1]
    percentiles = [20, 50, 80]
    torch.manual_seed(7)
    theirs = ROADCombined(percentiles=percentiles)(
        images, maps, [ClassifierOutputTarget(k) for k in classes], model
    )
    torch.manual_seed(7)
    ours = road_combined(model, images, maps, classes, percentiles)
    assert ours.dtype == np.float32 and ours.shape == (3,)
    assert np.array_equal(ours, np.asarray(theirs))
    torch.manual_seed(8)  # the noise matters: another draw gives other scores
    assert not np.array_equal(road_combined(model, images, maps, classes, percentiles), ours)


def test_a_run_asks_for_fewer_road_images_and_keeps_the_setting(tmp_path: Path) -> None:
    from ewaste_vision.config import TrainConfig
    from ewaste_vision.data.synth import write_synthetic_boards
    from ewaste_vision.evaluate import evaluate_run
    from ewaste_vision.training.trainer import train

    data = write_synthetic_boards(tmp_path / "boards", n=40, seed=2, size=128).parent
    config = TrainConfig(
        data=str(data),
        out=str(tmp_path / "run"),
        task="multilabel",
        backbone="tiny",
        image_size=64,
        head_epochs=2,
        extra={"road_images": 2},
    )
    result = train(config, progress=False)
    assert result is not None
    assert result.metrics["cam_images"] > 2 and result.metrics["cam_road_images"] == 2
    assert sum(row["n"] for row in result.metrics["cam_road"].values()) == 2  # one class per image
    metrics, _ = evaluate_run(result.run_dir)  # the setting travels with the run
    assert metrics["cam_road_images"] == 2
