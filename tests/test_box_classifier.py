"""The box classifier's pieces on hand-made images and boxes whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from ewaste_vision.config import TrainConfig
from ewaste_vision.data.records import ImageRecord, ObjectBox
from ewaste_vision.detect.box_classifier import (
    MIN_CLASS_BOXES,
    BoxClassifier,
    BoxProbabilities,
    box_crops,
    fit_gammas,
)
from ewaste_vision.detect.box_classifier_train import BoxCropDataset, add_box_classifier
from ewaste_vision.detect.box_scores import BoxClassifierSettings, rescore
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
    gamma, class_gammas, f1 = fit_gammas(products, [truth], num_classes=1)
    # 0.36 ** gamma > 0.5 > 0.2 ** gamma needs 0.43 < gamma < 0.68; the grid's nearest to 1 is 0.65.
    assert gamma == 0.65 and f1 == 1.0
    assert 0.36**gamma > 0.5 > 0.2**gamma
    assert class_gammas == (0.65,)  # too few boxes for an exponent of its own


def test_each_class_with_enough_boxes_gets_its_own_cut():
    # Class 0: right boxes at 0.6, false alarms at 0.45 (cut between them); class 1: right boxes
    # at 0.3, false alarms at 0.15 (a much lower cut). Class 2: two right boxes at 0.3, too few.
    n = MIN_CLASS_BOXES
    boxes, scores, labels, truth_boxes, truth_labels = [], [], [], [], []
    for i in range(n):
        for label, right, wrong in ((0, 0.6, 0.45), (1, 0.3, 0.15)):
            x = 100.0 * i + 30.0 * label
            boxes += [[x, 0.0, x + 10, 10.0], [x, 50.0, x + 10, 60.0]]
            scores += [right, wrong]
            labels += [label, label]
            truth_boxes.append([x, 0.0, x + 10, 10.0])
            truth_labels.append(label)
    for i in range(2):
        x = 100.0 * i + 60.0
        boxes.append([x, 0.0, x + 10, 10.0])
        scores.append(0.3)
        labels.append(2)
        truth_boxes.append([x, 0.0, x + 10, 10.0])
        truth_labels.append(2)
    found = DetectionPrediction(
        boxes=torch.tensor(boxes), scores=torch.tensor(scores), labels=torch.tensor(labels)
    )
    truth = {"boxes": torch.tensor(truth_boxes), "labels": torch.tensor(truth_labels)}
    gamma, class_gammas, f1 = fit_gammas([found], [truth], num_classes=3)
    assert 0.6 ** class_gammas[0] > 0.5 > 0.45 ** class_gammas[0]
    assert 0.3 ** class_gammas[1] > 0.5 > 0.15 ** class_gammas[1]
    assert class_gammas[2] == gamma  # two boxes: the overall exponent
    assert f1 == 1.0
    # No single exponent separates both classes (0.45 ** g > 0.5 whenever 0.3 ** g > 0.5).
    assert not 0.3**gamma > 0.5 > 0.45**gamma


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


def test_each_class_keeps_its_own_exponent_and_settings_survive_a_round_trip():
    settings = BoxClassifierSettings(min_score=0.0, gamma=1.0, class_gammas=(0.5, 2.0))
    found = {
        "boxes": np.array([[0, 0, 10, 10], [20, 0, 30, 10]], dtype=np.float32),
        "scores": np.array([0.64, 0.9], dtype=np.float32),
        "labels": np.array([0, 1]),
    }
    # The classifier agrees fully with both boxes, so the products are the detector's scores.
    out = rescore(found, lambda boxes: np.tile([1.0, 1.0, 0.0], (len(boxes), 1)), settings)
    # Class 0: 0.64 ** 0.5 = 0.8; class 1: 0.9 ** 2 = 0.81, now first.
    assert out["labels"].tolist() == [1, 0]
    assert out["scores"] == pytest.approx([0.81, 0.8])
    stored = json.loads(json.dumps(settings.to_dict()))
    assert BoxClassifierSettings.from_dict(stored) == settings
    # Settings saved before per-class exponents existed use the overall one for every class.
    assert BoxClassifierSettings.from_dict({"gamma": 0.7}).exponents(np.array([0, 3])) == 0.7


def test_settings_with_an_exponent_per_class_must_cover_every_class():
    stored = BoxClassifierSettings(gamma=0.7, class_gammas=(0.6, 0.7)).to_dict()
    assert BoxClassifierSettings.from_dict(stored, num_classes=2).class_gammas == (0.6, 0.7)
    with pytest.raises(ValueError, match="2 box-classifier exponents for 3 classes"):
        BoxClassifierSettings.from_dict(stored, num_classes=3)
