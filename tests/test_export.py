"""ONNX export: parity with PyTorch for every task, metadata, `ewaste predict model.onnx` (also on a
machine without PyTorch), bad files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ewaste_vision.cli import main
from ewaste_vision.data.synth import write_component_crops, write_synthetic_boards
from ewaste_vision.detect.facts import tile_side
from ewaste_vision.detect.predictor import Detector
from ewaste_vision.detect.tiling import needs_tiling
from ewaste_vision.errors import RunError
from ewaste_vision.inference import Predictor, expand_image_paths
from ewaste_vision.runs import MODEL_FILE, read_model_file

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install onnx onnxruntime")
pytest.importorskip("onnxruntime", reason="running ONNX files needs onnxruntime")

from ewaste_vision.export import ONNX_FORMAT, OnnxClassifier, OnnxDetector, load_onnx  # noqa: E402
from ewaste_vision.export.fcos_numpy import resize_bilinear  # noqa: E402

TINY = ["--backbone", "tiny", "--no-pretrained"]
LINEAR = [*TINY, "--image-size", "64", "--strategy", "linear", "--head-epochs", "2"]


def _train(args: list[str]) -> None:
    assert main(["train", *args]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny run per task, each exported next to its model, and test images for each."""
    root = tmp_path_factory.mktemp("export")
    crops = write_component_crops(root / "crops", n_per_class=6, seed=1, size=48)
    boards = write_synthetic_boards(root / "boards", n=16, seed=4, size=128).parent
    made = {
        "classify": root / "classify",
        "multilabel": root / "multilabel",
        "detect": root / "detect",
        "detect_plain": root / "detect_plain",
    }
    _train([str(crops), "--task", "classify", "--out", str(made["classify"]), *LINEAR])
    _train([str(boards), "--task", "multilabel", "--out", str(made["multilabel"]), *LINEAR])
    detect = [*TINY, "--image-size", "96", "--max-epochs", "1", "--batch-size", "4"]
    _train([str(boards), "--task", "detect", "--out", str(made["detect"]), *detect])
    # Without a box classifier: a one-epoch detector scores no box high enough for it to keep.
    plain = [*detect, "--no-box-classifier"]
    _train([str(boards), "--task", "detect", "--out", str(made["detect_plain"]), *plain])
    for run in made.values():
        assert main(["export", str(run), "--format", "onnx"]) == 0
    return {**made, "crops": crops, "boards": boards}


def test_export_writes_the_file_with_its_metadata(runs: dict[str, Path]):
    for task in ("classify", "multilabel", "detect"):
        run = runs[task]
        _, meta = read_model_file(run / MODEL_FILE)
        model = onnx.load(str(run / "model.onnx"))
        props = {p.key: p.value for p in model.metadata_props}
        assert props["format"] == ONNX_FORMAT and props["task"] == task
        assert json.loads(props["class_names"]) == meta.class_names
        loaded = load_onnx(run / "model.onnx").meta
        assert loaded.model.task == task and loaded.model.class_names == meta.class_names
        assert loaded.model.image_size == meta.image_size
        assert loaded.model.mean == pytest.approx(meta.mean) and loaded.model.std == pytest.approx(meta.std)
        assert {k: v for k, v in loaded.model.extra.items() if k != "box_classifier_file"} == meta.extra
        assert (loaded.detector is not None) == (task == "detect")
    thresholds = load_onnx(runs["multilabel"] / "model.onnx").meta.model.extra["thresholds"]
    assert len(thresholds) == len(read_model_file(runs["multilabel"] / MODEL_FILE)[1].class_names)
    detect = load_onnx(runs["detect"] / "model.onnx").meta
    assert detect.model.extra["detector_size"] == "n" and detect.detector is not None
    assert len(detect.detector.anchor_sizes) == 5


def test_the_box_classifier_goes_to_a_second_file_that_matches_pytorch(runs: dict[str, Path], tmp_path: Path):
    import onnxruntime

    _, meta = read_model_file(runs["detect"] / MODEL_FILE)
    assert "box_classifier" in meta.extra  # trained by default
    box_file = runs["detect"] / "model.boxes.onnx"
    assert load_onnx(runs["detect"] / "model.onnx").meta.model.extra["box_classifier_file"] == box_file.name
    judge = Detector.from_run(runs["detect"], precision="32").box_classifier
    assert judge is not None
    torch.manual_seed(0)
    image = torch.rand(3, 70, 110)
    boxes = torch.tensor([[5.0, 6.0, 30.0, 20.0], [40.0, 10.0, 109.0, 69.0], [0.0, 0.0, 3.0, 4.0]])
    expected = judge.probabilities(image, boxes).numpy()
    session = onnxruntime.InferenceSession(str(box_file), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": image[None].numpy(), "boxes": boxes.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # Without its second file the detector is refused, not silently run on the first stage alone.
    (tmp_path / "model.onnx").write_bytes((runs["detect"] / "model.onnx").read_bytes())
    with pytest.raises(RunError, match=r"box classifier of model\.onnx is missing"):
        OnnxDetector.from_file(tmp_path / "model.onnx")


@pytest.mark.parametrize("task", ["classify", "multilabel"])
def test_label_probabilities_match_pytorch(runs: dict[str, Path], task: str):
    torch.manual_seed(0)
    predictor = Predictor.from_run(runs[task], precision="32", compile="never")
    exported = OnnxClassifier.from_file(runs[task] / "model.onnx")
    size = predictor.meta.image_size
    images = torch.rand(5, 3, size, size)  # [B, 3, S, S] in [0, 1]
    mean = torch.tensor(predictor.meta.mean).view(1, 3, 1, 1)
    std = torch.tensor(predictor.meta.std).view(1, 3, 1, 1)
    expected = predictor.probabilities((images - mean) / std).numpy()
    got = exported.probabilities(images.numpy())  # batch of 5: the batch axis is dynamic
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-3
    # Whole files too: PIL's resize stands in for torchvision's, so this covers the preprocessing.
    files = expand_image_paths([runs["crops"] if task == "classify" else runs["boards"] / "test"])[:6]
    expected_files, kept, _ = predictor.predict_files(files)
    got_files, kept_onnx, _ = exported.predict_files(files)
    assert kept_onnx == kept
    assert np.abs(got_files - expected_files.numpy()).max() < 1e-3


def _show_every_box(detector: Detector, exported: OnnxDetector) -> None:
    """The tiny detector scores no box as high as the box classifier's `min_score`: lower it to
    0, so that both box classifiers re-score every box and the comparison covers them."""
    assert detector.box_classifier is not None and exported.box_settings is not None
    detector.box_classifier.settings = replace(detector.box_classifier.settings, min_score=0.0)
    exported.box_settings = replace(exported.box_settings, min_score=0.0)


def _assert_same_detections(expected: dict, got: dict) -> None:
    boxes, scores, labels = (expected[k].numpy() for k in ("boxes", "scores", "labels"))
    assert len(boxes) > 0, "no detections: the parity check would be empty"
    assert len(got["boxes"]) == len(boxes)
    for box, score, label in zip(boxes, scores, labels, strict=True):
        same_class = np.flatnonzero(got["labels"] == label)
        # Nearest same-class box; boxes clipped flat at the image border have no IoU, so those
        # must agree to the coordinate.
        best = same_class[np.abs(got["boxes"][same_class] - box).max(axis=1).argmin()]
        if (box[2:] > box[:2]).all():
            assert _iou(box, got["boxes"][best]) > 0.99
        else:
            assert np.abs(got["boxes"][best] - box).max() < 1e-2
        assert abs(float(got["scores"][best]) - float(score)) < 1e-3


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    low, high = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    overlap = float(np.clip(high - low, 0, None).prod())
    area = float((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod())
    return overlap / max(area - overlap, 1e-9)


@pytest.mark.parametrize("tile", ["never", "auto"])
def test_detections_match_pytorch(runs: dict[str, Path], tile: str):
    detector = Detector.from_run(runs["detect"], precision="32", tile=tile)
    exported = OnnxDetector.from_file(runs["detect"] / "model.onnx", tile=tile)
    _show_every_box(detector, exported)
    files = expand_image_paths([runs["boards"] / "test"])[:2]
    images = [detector.load(path) for path in files]
    images.append(images[0][:, :100, :75])  # not square: exercises the resize and the padding
    images.append(torch.cat(images[:2], dim=2))  # wide: tiled under `auto`, both merges compared
    for image in images:  # one at a time, as `ewaste predict` runs them
        (expected,) = detector.detect([image])
        (got,) = exported.detect([image.numpy()])
        _assert_same_detections(expected, got)


def test_detections_at_two_sizes_match_pytorch(runs: dict[str, Path]):
    trained = Detector.from_run(runs["detect"], precision="32", tile="never")
    sizes = {"detect_sizes": [trained.meta.image_size, 128]}
    detector = trained.at_sizes(sizes["detect_sizes"])
    onnx_model = load_onnx(runs["detect"] / "model.onnx")
    onnx_model.meta.model = replace(onnx_model.meta.model, extra={**onnx_model.meta.model.extra, **sizes})
    exported = OnnxDetector(onnx_model, tile="never")
    _show_every_box(detector, exported)
    assert len(exported.sized_settings) == 2
    for path in expand_image_paths([runs["boards"] / "test"])[:2]:
        image = detector.load(path)
        (expected,) = detector.detect([image])
        (got,) = exported.detect([image.numpy()])
        _assert_same_detections(expected, got)


def test_numpy_resize_matches_torchvision(runs: dict[str, Path]):
    settings = load_onnx(runs["detect"] / "model.onnx").meta.detector
    assert settings is not None
    image = torch.rand(3, 77, 130)
    scale = min(settings.min_size / 77, settings.max_size / 130)
    expected = torch.nn.functional.interpolate(
        image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
    )[0]
    got = resize_bilinear(image.numpy(), settings)
    assert got.shape == tuple(expected.shape)
    assert np.abs(got - expected.numpy()).max() < 1e-5


def test_predict_accepts_an_onnx_file(runs: dict[str, Path], tmp_path: Path):
    images = runs["crops"]
    out = tmp_path / "onnx.csv"
    assert main(["predict", str(runs["classify"] / "model.onnx"), str(images), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    files = expand_image_paths([images])
    probs, _, _ = Predictor.from_run(runs["classify"], precision="32", compile="never").predict_files(files)
    class_names = read_model_file(runs["classify"] / MODEL_FILE)[1].class_names
    assert [row["file"] for row in rows] == [str(path) for path in files]
    for row, expected in zip(rows, probs, strict=True):
        assert row["class1"] == class_names[int(expected.argmax())]
        assert abs(float(row["prob1"]) - float(expected.max())) < 1e-3


def test_predict_lists_boxes_for_detect_runs_and_their_export(runs: dict[str, Path], tmp_path: Path, capsys):
    images = runs["boards"] / "test"
    written = {}
    for name, model in (("run", runs["detect_plain"]), ("onnx", runs["detect_plain"] / "model.onnx")):
        out = tmp_path / f"{name}.json"
        assert main(["predict", str(model), str(images), "--out", str(out), "--min-score", "0.05"]) == 0
        written[name] = json.loads(out.read_text())["predictions"]
    assert [p["file"] for p in written["run"]] == [p["file"] for p in written["onnx"]]
    assert sum(len(p["detections"]) for p in written["onnx"]) > 0
    for detection in written["onnx"][0]["detections"]:
        assert set(detection) == {"class", "score", "box"} and len(detection["box"]) == 4
    csv_out = tmp_path / "boxes.csv"
    model = str(runs["detect_plain"] / "model.onnx")
    assert main(["predict", model, str(images), "--out", str(csv_out), "--min-score", "0.05"]) == 0
    header = csv_out.read_text().splitlines()[0]
    assert header == "file,class,score,x0,y0,x1,y1"
    capsys.readouterr()
    assert main(["predict", model, str(images), "--min-score", "0.05"]) == 0
    first = capsys.readouterr().out.splitlines()[0].split()
    assert len(first) == 7 and 0.05 < float(first[2]) <= 1


@pytest.mark.parametrize("name", ["model.onnx", "model.txt"])
def test_a_file_that_is_not_an_exported_model_is_a_clean_error(
    runs: dict[str, Path], tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
):
    bad = tmp_path / name
    bad.write_text("not a model\n")
    assert main(["predict", str(bad), str(runs["crops"])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(bad) in err and len(err.splitlines()) == 1


def test_an_onnx_file_from_elsewhere_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.rand(1, 3),), str(foreign), dynamo=False)
    assert main(["predict", str(foreign), str(tmp_path)]) == 2
    assert "not an ewaste-vision ONNX file" in capsys.readouterr().err


_TORCH_FAMILY = ("torch", "torchvision", "timm", "lightning", "torchmetrics", "pytorch_grad_cam")

# Runs `ewaste` commands (JSON list of argv lists) in a Python that cannot import the torch family,
# as on an edge box with only the ONNX path's packages; prints the exit codes and any of those
# packages that were loaded anyway.
_WITHOUT_TORCH = f"""
import json, sys
BLOCKED = {_TORCH_FAMILY!r}

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not installed on an edge box")

sys.meta_path.insert(0, NoTorch())
from ewaste_vision.cli import main

codes = [main(argv) for argv in json.loads(sys.argv[1])]
print(json.dumps({{"codes": codes, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}}))
"""


def _large_board(boards: Path, target: Path) -> Path:
    """Two test boards side by side: wide enough that the detector cuts the pair into tiles."""
    tiles = [Image.open(path).convert("RGB") for path in expand_image_paths([boards / "test"])[:2]]
    side = tiles[0].width
    mosaic = Image.new("RGB", (2 * side, side))
    for index, tile in enumerate(tiles):
        mosaic.paste(tile.resize((side, side)), (index * side, 0))
    target.mkdir(parents=True)
    mosaic.save(target / "large.png")
    return target / "large.png"


def _xray_export(detect_export: Path, target: Path) -> Path:
    """The detect export relabelled as an X-ray detector: same graph, X-ray pairs as its input."""
    model = onnx.load(str(detect_export))
    for prop in model.metadata_props:
        if prop.key == "modality":
            prop.value = json.dumps("xray")
    onnx.save(model, str(target))
    return target


def _xray_pair(folder: Path, height: int, width: int) -> Path:
    """A 16-bit dual-energy pair `scan.high.png` / `scan.low.png`."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for energy, floor in (("high", 30000), ("low", 10000)):
        counts = rng.integers(floor, 60000, (height, width)).astype(np.uint16)
        Image.fromarray(counts).save(folder / f"scan.{energy}.png")
    return folder / "scan.high.png"


def test_predict_with_an_onnx_file_needs_no_pytorch(runs: dict[str, Path], tmp_path: Path):
    detect_meta = load_onnx(runs["detect_plain"] / "model.onnx").meta.model
    tile = tile_side(detect_meta)
    large = _large_board(runs["boards"], tmp_path / "large")
    scan = _xray_pair(tmp_path / "xray", tile, 2 * tile)
    for path in (large, scan):  # both take the tiled path, numpy merge included
        with Image.open(path) as opened:
            assert needs_tiling(opened.width, opened.height, tile)
    xray_model = _xray_export(runs["detect_plain"] / "model.onnx", tmp_path / "xray.onnx")
    commands = {
        "classify": [runs["classify"] / "model.onnx", runs["crops"], "--top-k", "3"],
        "multilabel": [runs["multilabel"] / "model.onnx", runs["boards"] / "test"],
        "detect": [runs["detect_plain"] / "model.onnx", runs["boards"] / "test", large, "--min-score", ".05"],
        "xray": [xray_model, scan, "--min-score", "0.05"],
        # With its box classifier's second file (which keeps none of a one-epoch detector's boxes).
        "detect_boxes": [runs["detect"] / "model.onnx", runs["boards"] / "test"],
    }

    def argv(name: str, out: Path) -> list[str]:
        return ["predict", *map(str, commands[name]), "--out", str(out / f"{name}.json")]

    edge, here = tmp_path / "edge", tmp_path / "here"
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TORCH, json.dumps([argv(name, edge) for name in commands])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report == {"codes": [0] * len(commands), "loaded": []}

    for name in commands:
        assert main(argv(name, here)) == 0
        expected = json.loads((here / f"{name}.json").read_text())
        got = json.loads((edge / f"{name}.json").read_text())
        assert got == expected, name
        assert got["predictions"] and not got["skipped"]
    xray_rows = json.loads((edge / "xray.json").read_text())["predictions"]
    boxes = {Path(row["file"]).name: row["detections"] for row in xray_rows}
    assert boxes["scan.high.png"], "no X-ray detections: the comparison would be empty"
    detect_rows = json.loads((edge / "detect.json").read_text())["predictions"]
    assert [row["detections"] for row in detect_rows if row["file"] == str(large)] != [[]]
