"""The box classifier's pieces on hand-made images and boxes whose answers are known."""

from __future__ import annotations

import torch
from torch import nn

from ewaste_vision.config import TrainConfig
from ewaste_vision.data.records import ImageRecord, ObjectBox
from ewaste_vision.detect.box_classifier import BoxClassifier, BoxProbabilities, box_crops, fit_gamma
from ewaste_vision.detect.box_classifier_train import BoxCropDataset, add_box_classifier
from ewaste_vision.detect.box_scores import BoxClassifierSettings
from ewaste_vision.detect.metrics import DetectionPrediction
from ewaste_vision.runs import ModelMeta


def _square_image() -> torch.Tensor:
    """Black 60x80 image with a white 40x20 rectangle at x 10-50, y 20-40."""
    image = torch.zeros(3, 60, 80)
    image[:, 20:40, 10:50] = 1.0
    return image


def test_crops_hold_the_box_and_the_margin_asked_for():
    box = torch.tensor([[10.0, 20.0, 50.0, 40.0]])
    # No padding still keeps 2 px around the box: the crop's outer ring touches background.
    tight = box_crops(_square_image(), box, crop_size=16, padding=0.0)
    assert tight.shape == (1, 3, 16, 16) and tight[0, :, 2:-2, 2:-2].min() > 0.99
    assert tight[0, :, 0, :].max() < 0.01
    # A margin of half the box on each side: the crop's outer quarter is background.
    wide = box_crops(_square_image(), box, crop_size=16, padding=0.5)
    assert wide[0, :, :, :3].max() < 0.01 and wide[0, :, :3, :].max() < 0.01
    assert wide[0, :, 6:10, 6:10].min() > 0.99


class _RedMeansClassZero(nn.Module):
    """Logits for classes (0, 1, background): class 0 where a crop is bright, background where dark."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(1, 3)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        brightness = crops[:, 0].mean(dim=(1, 2))  # [N]
        zeros = torch.zeros_like(brightness)
        return torch.stack([40 * (brightness - 0.5), zeros - 40, zeros], dim=1)


def test_rescore_keeps_agreed_boxes_drops_disputed_ones_and_skips_weak_ones():
    settings = BoxClassifierSettings(crop_size=8, padding=0.0, min_score=0.4, gamma=0.5)
    network = _RedMeansClassZero()
    judge = BoxClassifier(BoxProbabilities(network, settings, mean=(0, 0, 0), std=(1, 1, 1)))  # type: ignore[arg-type]
    found = DetectionPrediction(
        boxes=torch.tensor([[60.0, 45.0, 75.0, 55.0], [12.0, 22.0, 48.0, 38.0], [15.0, 25.0, 30.0, 35.0]]),
        scores=torch.tensor([0.9, 0.81, 0.3]),
        labels=torch.tensor([0, 0, 0]),
    )
    out = judge.rescore(_square_image(), found)
    # The weak box (0.3 < min_score) is gone; the box on white is confirmed: (0.81 x 1) ** 0.5;
    # the one on black, which the classifier calls background, falls to almost nothing.
    assert len(out["boxes"]) == 2
    assert torch.equal(out["boxes"][0], found["boxes"][1])
    assert abs(float(out["scores"][0]) - 0.9) < 1e-3
    assert float(out["scores"][1]) < 1e-3


def test_gamma_moves_the_f1_best_cut_to_one_half():
    truth = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([0])}
    # A right box at product 0.36 and a false alarm at 0.2: any cut between them gives F1 = 1.
    products = [
        DetectionPrediction(
            boxes=torch.tensor([[0.0, 0.0, 10.0, 10.0], [30.0, 30.0, 40.0, 40.0]]),
            scores=torch.tensor([0.36, 0.2]),
            labels=torch.tensor([0, 0]),
        )
    ]
    gamma, f1 = fit_gamma(products, [truth], num_classes=1)
    # 0.36 ** gamma > 0.5 > 0.2 ** gamma needs 0.43 < gamma < 0.68; the grid's nearest to 1 is 0.65.
    assert gamma == 0.65 and f1 == 1.0
    assert 0.36**gamma > 0.5 > 0.2**gamma


def test_crop_dataset_gives_each_labelled_box_and_background(tmp_path, make_image):
    path = make_image(tmp_path / "board.png", seed=0, size=(80, 60))
    record = ImageRecord(
        path=path,
        label=-1,
        boxes=(ObjectBox(1, 0.375, 0.5, 0.5, 0.333), ObjectBox(0, 0.9, 0.1, 0.1, 0.1)),
    )
    settings = BoxClassifierSettings(crop_size=16)
    val = BoxCropDataset([record], 2, settings, (0.5,) * 3, (0.5,) * 3, augment=False, seed=1)
    assert len(val) == 3  # two boxes and one background crop (half as many, rounded down)
    labels = [val[i][1] for i in range(len(val))]
    assert labels == [1, 0, 2] and val[0][0].shape == (3, 16, 16)
    # Validation crops are fixed; training crops move.
    assert torch.equal(val[2][0], val[2][0])
    train = BoxCropDataset([record], 2, settings, (0.5,) * 3, (0.5,) * 3, augment=True)
    assert train[0][1] == 1 and train[2][1] == 2


def test_no_box_classifier_without_labelled_boxes_to_learn_from(tmp_path, make_image):
    empty = ImageRecord(path=make_image(tmp_path / "a.png", seed=0), label=-1)
    meta = ModelMeta("detect", ["ic"], "tiny", 64, (0.5,) * 3, (0.5,) * 3)
    state = {"weight": torch.ones(1)}
    config = TrainConfig(data=str(tmp_path), out=str(tmp_path / "run"))
    kept, facts = add_box_classifier(
        None,
        state,
        meta,
        {"train": [empty], "val": [empty]},
        config,
        tmp_path,
        "cpu",
        False,
        False,  # type: ignore[arg-type]
    )
    assert kept is state and "box_classifier" not in meta.extra
    assert facts["box_classifier"].startswith("not trained")
