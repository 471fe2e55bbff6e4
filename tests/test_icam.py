"""iCAM head (002): crops land on the CAM's hot spot, N iterations, the three aggregates, the run
end to end (train, predict, evaluate, explain, export), and bad settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ewaste_vision.cli import main
from ewaste_vision.model_meta import HeadSettings
from ewaste_vision.models.classifier import build_classifier
from ewaste_vision.models.icam import FeatureAggregator, IcamClassifier, crop_and_resize

SIDE = 64
SPOT = (40, 44, 10, 14)  # rows 40-43, columns 10-13 of a 64 x 64 image


class BrightnessBackbone(nn.Module):
    """Feature map = the image averaged over 8 x 8 cells, so the CAM peaks where the image is bright.

    Counts its calls, to check how many looks a forward pass takes.
    """

    num_features = 3

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return F.avg_pool2d(images, 8)  # [B, 3, S/8, S/8]


def _spot_model(
    iterations: int = 3, aggregate: str = "weighted", crop_fraction: float = 0.5
) -> IcamClassifier:
    model = IcamClassifier(BrightnessBackbone(), 2, 0.0, iterations, aggregate, crop_fraction).eval()
    with torch.no_grad():  # class 0 sums the channels, so it wins on any non-black image
        model.head.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
        model.head.bias.zero_()
    return model


def _spot_image(corner: bool = False) -> torch.Tensor:
    image = torch.zeros(1, 3, SIDE, SIDE)
    top, bottom, left, right = (58, 62, 58, 62) if corner else SPOT
    image[:, :, top:bottom, left:right] = 1.0
    return image


def _contains(box: torch.Tensor, rows: tuple[int, int], columns: tuple[int, int]) -> bool:
    x0, y0, x1, y1 = box.tolist()
    return x0 <= columns[0] and columns[1] <= x1 and y0 <= rows[0] and rows[1] <= y1


@pytest.mark.parametrize("corner", [False, True], ids=["inside", "at-the-corner"])
def test_every_crop_is_a_square_inside_the_image_around_the_hot_spot(corner: bool):
    model = _spot_model(iterations=3)
    trace = model.trace(_spot_image(corner))
    boxes = trace.boxes[0]  # [3, 4]
    assert boxes.shape == (3, 4)
    assert boxes[0].tolist() == [0.0, 0.0, SIDE, SIDE]  # view 0 is the whole image
    rows, columns = ((58, 62), (58, 62)) if corner else ((SPOT[0], SPOT[1]), (SPOT[2], SPOT[3]))
    for index, box in enumerate(boxes):
        x0, y0, x1, y1 = box.tolist()
        assert x1 - x0 == pytest.approx(y1 - y0), "not square"
        assert x1 - x0 == pytest.approx(SIDE * 0.5**index)
        assert min(x0, y0) >= 0.0 and max(x1, y1) <= SIDE, f"view {index} leaves the image: {box}"
        assert _contains(box, rows, columns), f"view {index} {box.tolist()} misses the spot"
    if corner:  # pushed inward: the crop ends at the image's edge instead of crossing it
        assert boxes[1].tolist() == [32.0, 32.0, 64.0, 64.0]
    else:  # the spot's cell (row 5, column 1 of 8) is the centre, moved inward to 16 px from the edge
        assert boxes[1].tolist() == [0.0, 28.0, 32.0, 60.0]


def test_the_next_view_is_the_crop_resampled_to_the_input_size():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 8, 8)
    one = torch.ones(1)
    view = crop_and_resize(image, 0.25 * one, 0.5 * one, 0.5 * one)  # columns 2-5, rows 4-7
    assert view.shape == image.shape
    expected = F.interpolate(image[:, :, 4:8, 2:6], size=(8, 8), mode="bilinear", align_corners=False)
    # Inside the box the two agree exactly; at its rim grid_sample reads the real neighbour
    # pixels where F.interpolate repeats the crop's edge.
    torch.testing.assert_close(view[:, :, 1:-1, 1:-1], expected[:, :, 1:-1, 1:-1])


@pytest.mark.parametrize("iterations", [1, 2, 4])
def test_n_iterations_are_n_backbone_passes_and_n_views(iterations: int):
    model = _spot_model(iterations)
    images = torch.rand(2, 3, SIDE, SIDE)
    model.backbone.calls = 0
    logits = model(images)
    assert logits.shape == (2, 2)
    assert model.backbone.calls == iterations
    trace = model.trace(images)
    assert trace.boxes.shape == (2, iterations, 4) and len(trace.cams) == iterations
    assert trace.classes.shape == (2, iterations)
    torch.testing.assert_close(trace.logits, logits)
    assert model.aggregated_features(images).shape == (2, BrightnessBackbone.num_features)
    assert model.classifier is model.head and isinstance(model.classifier, nn.Linear)


def test_the_aggregates_combine_the_iterations_as_named():
    torch.manual_seed(0)
    pooled = torch.rand(3, 2, 5)  # [N, B, F]
    torch.testing.assert_close(FeatureAggregator(3, "sum")(pooled), pooled.sum(0))
    torch.testing.assert_close(FeatureAggregator(3, "mean")(pooled), pooled.mean(0))
    weighted = FeatureAggregator(3, "weighted")
    torch.testing.assert_close(weighted(pooled), pooled.mean(0))  # starts as the mean
    assert not list(FeatureAggregator(3, "mean").parameters())
    assert not list(FeatureAggregator(3, "sum").parameters())
    # Learnable: a loss that favours iteration 2 moves the softmax weight onto it.
    optimiser = torch.optim.SGD(weighted.parameters(), lr=1.0)
    target = pooled[2]
    for _ in range(50):
        optimiser.zero_grad()
        loss = (weighted(pooled) - target).pow(2).sum()
        loss.backward()
        optimiser.step()
    weights = weighted.weights()
    assert weights.sum().item() == pytest.approx(1.0)
    assert weights[2] > 0.6 and weights.argmax().item() == 2
    with pytest.raises(ValueError, match="aggregate"):
        FeatureAggregator(3, "max")


@pytest.mark.parametrize("aggregate", ["weighted", "mean", "sum"])
def test_every_aggregate_gives_one_vector_per_image_and_trains_the_head(aggregate: str):
    model, _ = build_classifier("tiny", 3, pretrained=False, head=HeadSettings("icam", 2, aggregate, 0.5))
    assert isinstance(model, IcamClassifier)
    images = torch.rand(2, 3, 64, 64)
    assert model.aggregated_features(images).shape == (2, model.num_features)
    model.train()
    loss = F.cross_entropy(model(images), torch.tensor([0, 2]))
    loss.backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    if aggregate == "weighted":
        assert model.aggregator.weight_logits is not None
        assert model.aggregator.weight_logits.grad is not None


def test_the_head_on_cached_looks_is_the_network_and_its_cache_follows_the_head():
    """Training on cached looks trains the same function the network computes on images, and a
    changed classifier (which moves the crops) never reads the looks cached under the old one."""
    from ewaste_vision.training.icam_looks import LooksHead, head_digest

    torch.manual_seed(0)
    model = IcamClassifier(BrightnessBackbone(), 2, 0.3, 3, "weighted", 0.5).eval()
    with torch.no_grad():
        model.aggregator.weight_logits.copy_(torch.tensor([0.5, -0.2, 0.1]))  # type: ignore[union-attr]
    images = torch.rand(4, 3, SIDE, SIDE)
    looks = model.look_features(images)  # [N, B, F]
    assert looks.shape == (3, 4, BrightnessBackbone.num_features)
    head = LooksHead(model).eval()
    assert torch.allclose(head(looks.transpose(0, 1)), model(images), atol=1e-6)
    assert set(head.parameters()) == {model.head.weight, model.head.bias, model.aggregator.weight_logits}

    before = head_digest(model)
    with torch.no_grad():
        model.head.weight[0, 0] += 1e-3
    assert head_digest(model) != before


@pytest.fixture(scope="module")
def icam_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny iCAM run (3 iterations, backbone frozen) on synthetic class folders."""
    from ewaste_vision.data.synth import write_component_crops

    root = tmp_path_factory.mktemp("icam")
    crops = write_component_crops(root / "crops", n_per_class=6, seed=1, size=48)
    run = root / "run"
    args = ["train", str(crops), "--task", "classify", "--out", str(run), "--backbone", "tiny"]
    args += ["--no-pretrained", "--image-size", "64", "--strategy", "linear", "--head-epochs", "2"]
    args += ["--max-epochs", "1", "--head", "icam", "--icam-iterations", "3", "--aggregate", "weighted"]
    assert main(args) == 0
    return run, crops


def test_an_icam_run_saves_its_head_and_serves_every_command(icam_run: tuple[Path, Path], tmp_path: Path):
    from ewaste_vision.inference import Predictor
    from ewaste_vision.runs import MODEL_FILE, read_model_file

    run, crops = icam_run
    state, meta = read_model_file(run / MODEL_FILE)
    assert meta.extra["head"] == {
        "kind": "icam",
        "iterations": 3,
        "aggregate": "weighted",
        "crop_fraction": 0.5,
    }
    assert "aggregator.weight_logits" in state
    assert (run / "probe" / "checkpoints").is_dir()  # the cached first-view probe warmed the head
    for round_dir in ("looks-1", "looks-2"):  # then aggregator and head trained on cached looks
        assert (run / round_dir / "checkpoints" / "best.ckpt").is_file()
    predictor = Predictor.from_run(run, precision="32", compile="never")
    assert isinstance(predictor.model, IcamClassifier) and predictor.model.iterations == 3

    assert "icam (3 iterations" in (run / "report.md").read_text()  # the training report says so

    assert main(["predict", str(run), str(crops), "--out", str(tmp_path / "p.csv")]) == 0
    assert (tmp_path / "p.csv").read_text().count("\n") == 1 + sum(1 for _ in crops.rglob("*.jpg"))
    assert main(["evaluate", str(run)]) == 0

    images = sorted((crops / "ic").glob("*.jpg"))[:1]
    assert main(["explain", str(run), *map(str, images), "--out", str(tmp_path / "explain")]) == 0
    for image in images:
        panel = tmp_path / "explain" / image.stem / "icam.png"
        assert panel.is_file() and panel.stat().st_size > 1000

    onnx = pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime")
    assert onnx is not None
    assert main(["export", str(run), "--out", str(tmp_path / "icam.onnx")]) == 0
    from ewaste_vision.export import OnnxClassifier

    session = OnnxClassifier.from_file(tmp_path / "icam.onnx")
    paths = sorted(crops.rglob("*.jpg"))
    got, _, _ = session.predict_files(paths)
    expected, _, _ = predictor.predict_files(paths)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--head", "icam", "--icam-iterations", "0"], "icam_iterations must be at least 1"),
        (["--head", "icam", "--aggregate", "max"], "unknown aggregate 'max'"),
        (["--head", "cam"], "unknown head 'cam'"),
        (["--head", "icam", "--icam-crop-fraction", "1.5"], "icam_crop_fraction"),
        (["--head", "icam", "--task", "multilabel"], "classify task"),
    ],
)
def test_bad_icam_settings_are_one_line_errors(tmp_path: Path, capsys, flags: list[str], message: str):
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert message in err, err
    assert not (tmp_path / "run").exists()
