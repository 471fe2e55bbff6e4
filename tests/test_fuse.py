"""RGB-X fusion (002): pairing, device splits, what fast and slow fusion freeze, and the `ewaste`
commands end to end on tiny synthetic pairs (coloured RGB images, 16-bit striped X-rays)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from ewaste_vision.cli import main
from ewaste_vision.data.records import ImageRecord
from ewaste_vision.fusion.data import device_of, read_paired_folders, split_by_device
from ewaste_vision.fusion.datasets import ImagePairs
from ewaste_vision.fusion.model import TwoStreamFusion, frozen_batchnorm, set_fusion_trainable
from ewaste_vision.fusion.module import FusionModule
from ewaste_vision.fusion.pairing import ORIENTATIONS, orient, plan_pairs
from ewaste_vision.models.classifier import build_classifier
from ewaste_vision.models.registry import get_backbone_spec

COLOURS = [(220, 40, 40), (40, 180, 60), (50, 70, 220)]
FAST = ["--backbone", "tiny", "--image-size", "32", "--batch-size", "16", "--head-epochs", "8"]


def make_paired_dataset(root: Path, classes: int = 3, devices: int = 4, seed: int = 0) -> Path:
    """ROOT/rgb/cN/devND_KK.png (40x32, colour = class) and ROOT/xray/cN/devND_KK.png (48x48,
    16-bit, stripe count = class). Image 00 of a device has the same stem on both sides (a true
    pair), image 01 of the RGB side has no X-ray of its stem and image 02 of the X-ray side no RGB."""
    rng = np.random.default_rng(seed)
    for label in range(classes):
        for device in range(devices):
            for k in (0, 1):
                noise = rng.integers(0, 40, size=(32, 40, 3))
                pixels = np.clip(noise + np.array(COLOURS[label]), 0, 255).astype(np.uint8)
                path = root / "rgb" / f"c{label}" / f"dev{label}{device}_{k:02d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
            for k in (0, 2):
                rows = np.arange(48)[:, None] * np.ones((1, 48))
                stripes = (np.sin(rows / 48 * np.pi * 2 * (label + 1)) + 1) / 2
                values = np.clip(stripes * 0.8 + 0.1 + rng.normal(0, 0.05, size=(48, 48)), 0, 1)
                path = root / "xray" / f"c{label}" / f"dev{label}{device}_{k:02d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((values * 65535).astype(np.uint16)).save(path)
    return root


@pytest.fixture(scope="module")
def pairs_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_paired_dataset(tmp_path_factory.mktemp("pairs"))
    (root / "xray" / "c1" / "broken_00.png").write_bytes(b"not a png")
    return root


@pytest.fixture(scope="module")
def fused_run(pairs_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "fast"
    assert main(["train", str(pairs_data), "--task", "fuse", "--out", str(run), *FAST]) == 0
    return run


def _records(stems: list[tuple[str, int]]) -> list[ImageRecord]:
    return [ImageRecord(Path(f"/data/{stem}.png"), label) for stem, label in stems]


def test_pairing_respects_classes_true_pairs_and_covers_every_image():
    rgb = _records([("a", 0), ("b", 0), ("c", 0), ("d", 1)])
    xray = _records([("a", 0), ("x", 0), ("y", 1), ("z", 1), ("w", 1)])
    pairs = plan_pairs(rgb, xray, seed=0, use="train", epoch=0)
    assert all(rgb[p.rgb].label == xray[p.xray].label == p.label for p in pairs)
    true = [p for p in pairs if p.true_pair]
    assert [(rgb[p.rgb].path.stem, xray[p.xray].path.stem, p.orientation) for p in true] == [("a", "a", 0)]
    assert {p.rgb for p in pairs} == set(range(len(rgb))) and {p.xray for p in pairs} == set(range(len(xray)))
    assert len(pairs) == 1 + 2 + 3  # per class: true pairs, then the larger side of the rest
    # Training draws new random partners per epoch; validation and test pairs never change.
    epochs = {
        tuple((p.rgb, p.xray, p.orientation) for p in plan_pairs(rgb, xray, 0, "train", e)) for e in range(6)
    }
    assert len(epochs) > 1
    assert plan_pairs(rgb, xray, 0, "test", 0) == plan_pairs(rgb, xray, 0, "test", 5)
    with pytest.raises(ValueError):
        plan_pairs(rgb, _records([("a", 0)]), 0, "train")


def test_orientations_are_the_eight_distinct_right_angle_views():
    image = torch.arange(9.0).reshape(1, 3, 3)
    views = {tuple(orient(image, o).flatten().tolist()) for o in range(ORIENTATIONS)}
    assert len(views) == ORIENTATIONS
    assert torch.equal(orient(image, 0), image)


def test_device_split_keeps_each_device_in_one_split_on_both_sides(pairs_data: Path):
    assert device_of(Path("phone3_07.png")) == "phone3" and device_of(Path("x-12.jpg")) == "x"
    data = split_by_device(read_paired_folders(pairs_data), seed=0, fractions=(0.5, 0.25, 0.25))
    split_of_device: dict[str, set[str | None]] = {}
    for record in data.rgb + data.xray:
        split_of_device.setdefault(device_of(record.path), set()).add(record.split)
    assert all(len(splits) == 1 for splits in split_of_device.values())
    for split in ("train", "val", "test"):
        for side in (data.rgb, data.xray):
            assert {r.label for r in side if r.split == split} == {0, 1, 2}


def test_one_sided_split_folders_carry_over_to_the_other_side_by_device(tmp_path: Path):
    root = make_paired_dataset(tmp_path / "data", classes=2, devices=3)
    assert device_of(Path("dev01__a0003.png")) == "dev01"  # `ewaste data synth-xray` renders
    for path in sorted((root / "xray").rglob("*.png")):  # X-ray side only: split folders by device
        split = ("train", "val", "test")[int(path.stem[4])]
        target = root / "xray" / split / path.parent.name / f"{path.stem[:5]}__a{path.stem[-2:]}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
    data = read_paired_folders(root)
    for record in data.rgb:
        assert record.split == ("train", "val", "test")[int(record.path.stem[4])]


def _tiny_fusion(mode: str, icam: bool = False) -> TwoStreamFusion:
    from ewaste_vision.model_meta import HeadSettings

    torch.manual_seed(0)
    head = HeadSettings("icam", iterations=2) if icam else None
    streams = [build_classifier("tiny", 3, pretrained=False, head=head)[0] for _ in range(2)]
    model = TwoStreamFusion(streams[0], streams[1], 3)
    set_fusion_trainable(model, mode, ("tiny", "tiny"))
    return model


def _fit_on_images(model: TwoStreamFusion, pairs_data: Path, tmp_path: Path) -> None:
    """Two epochs of stage 2 with images through the whole network (BN layers in train mode)."""
    from ewaste_vision.data.datasets import ImageFileDataset
    from ewaste_vision.data.transforms import eval_transform

    data = read_paired_folders(pairs_data)
    rgb = [r for r in data.rgb][:12]
    xray = [r for r in data.xray if r.path.stat().st_size > 100][:12]
    spec = get_backbone_spec("tiny")
    make = lambda records: ImageFileDataset(  # noqa: E731
        [r.path for r in records], torch.zeros(len(records)), eval_transform(32, spec.mean, spec.std), 32
    )
    pairs = ImagePairs(rgb, xray, make(rgb), make(xray), seed=0, use="train")
    module = FusionModule(model, pairs, 1e-2, 0.0, frozen_batchnorm=frozen_batchnorm(model))
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(pairs, batch_size=8, shuffle=True))


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("icam", [False, True], ids=["plain", "icam"])
def test_fast_fusion_changes_only_the_classifier_layers_and_the_fusion_layer(
    pairs_data: Path, tmp_path: Path, icam: bool
):
    model = _tiny_fusion("fast", icam)
    if icam:
        assert "rgb.aggregator.weight_logits" in model.state_dict()  # frozen too (002: theta_FA)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _fit_on_images(model, pairs_data, tmp_path)
    changed = _changed(before, model.state_dict())
    trainable = {
        "rgb.head.weight",
        "rgb.head.bias",
        "xray.head.weight",
        "xray.head.bias",
        "fusion.weight",
        "fusion.bias",
    }
    assert changed and changed <= trainable  # backbones bit-identical, batch-norm statistics too
    assert "fusion.weight" in changed


def test_slow_fusion_also_trains_the_higher_layers_but_not_the_lower_ones(pairs_data: Path, tmp_path: Path):
    model = _tiny_fusion("slow")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _fit_on_images(model, pairs_data, tmp_path)
    changed = _changed(before, model.state_dict())
    tail = get_backbone_spec("tiny").trainable_tail
    for stream in ("rgb", "xray"):
        higher = {k for k in before if k.startswith(tuple(f"{stream}.backbone.{t}." for t in tail))}
        lower = {k for k in before if k.startswith(f"{stream}.backbone.")} - higher
        assert changed & higher, f"{stream}: no higher layer trained"
        assert not changed & lower, f"{stream}: lower layers changed: {sorted(changed & lower)}"


def test_stage3_trusts_the_stream_that_generalises_and_folds_into_the_fusion_layer():
    # Validation pairs where the X-ray layer is right, the RGB layer guesses and the stage-2
    # fusion layer listens to RGB alone (what a fit on memorised training devices can give).
    from ewaste_vision.fusion.calibrate import RIDGE, calibrate_fusion

    model = _tiny_fusion("fast")
    model.eval()
    width = model.xray.head.in_features
    generator = torch.Generator().manual_seed(0)
    rgb_features, xray_features = (
        torch.randn(60, width, generator=generator),
        torch.randn(60, width, generator=generator),
    )
    with torch.no_grad():
        g_rgb, g_xray = model.stream_logits(rgb_features, xray_features)
        flips = torch.rand(60, generator=generator) < 0.15  # the X-ray layer wrong on ~15%
        labels = torch.where(flips, (g_xray.argmax(1) + 1) % 3, g_xray.argmax(1))
        model.fusion.weight.copy_(torch.cat([torch.eye(3), torch.zeros(3, 3)], dim=1))
        model.fusion.bias.copy_(torch.tensor([0.5, -0.3, 0.1]))
        # Dropout on would change the stream logits: stage 3 must score the network in eval mode.
        model.rgb.dropout.p = model.xray.dropout.p = 0.5
        eval_xray_loss = float(F.cross_entropy(g_xray, labels))
    model.train()
    heads_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fusion.")}
    loader = DataLoader(list(zip(rgb_features, xray_features, labels, strict=True)), batch_size=16)

    result = calibrate_fusion(model, loader, features=True)

    assert result["weights"]["xray"] > 10 * result["weights"]["rgb"]
    assert result["weights"]["xray"] > result["weights"]["fusion_layer"]
    scores = result["val"]
    # (0, 0, 1) is one of the weightings searched: the fit is never worse than the X-ray layer alone.
    assert scores["xray_layer"]["loss"] == pytest.approx(eval_xray_loss, abs=1e-4)
    assert scores["calibrated"]["loss"] <= scores["xray_layer"]["loss"] + RIDGE
    assert scores["calibrated"]["loss"] < scores["stage2_fusion"]["loss"]
    assert scores["calibrated"]["accuracy"] > scores["stage2_fusion"]["accuracy"] + 0.2
    # Folded into the one linear layer: the network computes the fitted combination, and nothing
    # but the fusion layer changed.
    weights = torch.tensor([result["weights"][k] for k in ("fusion_layer", "rgb", "xray")])
    stage2 = torch.cat([g_rgb, g_xray], dim=1) @ torch.tensor(result["stage2_fusion"]["weight"]).T
    expected = (
        weights[0] * (stage2 + torch.tensor(result["stage2_fusion"]["bias"]))
        + weights[1] * g_rgb
        + weights[2] * g_xray
    )
    with torch.no_grad():
        torch.testing.assert_close(model.fuse(rgb_features, xray_features), expected, atol=2e-3, rtol=1e-3)
    assert not _changed(heads_before, {k: v for k, v in model.state_dict().items() if k in heads_before})


def test_fuse_run_end_to_end(
    fused_run: Path, pairs_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    for name in ("config.yaml", "model.pt", "metrics.json", "report.md", "split_rgb.csv", "split_xray.csv"):
        assert (fused_run / name).is_file(), name
    metrics = json.loads((fused_run / "metrics.json").read_text())
    assert metrics["task"] == "fuse" and metrics["fusion"] == "fast"
    assert 0.0 <= metrics["accuracy_ci95"][0] <= metrics["accuracy"] <= metrics["accuracy_ci95"][1]
    assert metrics["baseline_accuracy"] == pytest.approx(1 / 3, abs=0.1)
    assert metrics["true_pairs"] > 0 and metrics["random_pairs"] > 0
    assert set(metrics["streams_alone"]) == {"rgb", "xray"} and "accuracy" in metrics["streams_alone"]["xray"]
    assert metrics["calibration"]["val_pairs"] > 0 and "stage2_fusion_on_pairs" in metrics
    # The unreadable X-ray is skipped and reported, not fatal.
    assert "broken_00.png" in (fused_run / "report.md").read_text()

    # Stage 2 left the streams' extractors exactly as stage 1 trained them.
    fused = torch.load(fused_run / "model.pt", weights_only=True)["state_dict"]
    for stream in ("rgb", "xray"):
        own = torch.load(fused_run / "streams" / stream / "model.pt", weights_only=True)["state_dict"]
        for key, value in own.items():
            if key.startswith("backbone."):
                assert torch.equal(fused[f"{stream}.{key}"], value), key

    # No stream ever trained on a file of the fusion's test split.
    for stream in ("rgb", "xray"):
        rows = (fused_run / f"split_{stream}.csv").read_text().splitlines()[1:]
        test_files = {row.split(",")[0] for row in rows if ",test," in row}
        stream_rows = (fused_run / "streams" / stream / "split.csv").read_text().splitlines()[1:]
        trained = {str(Path(row.split(",")[0]).resolve()) for row in stream_rows if ",train," in row}
        assert test_files and not test_files & trained

    capsys.readouterr()
    rgb_file, xray_file = (
        pairs_data / "rgb" / "c2" / "dev20_00.png",
        pairs_data / "xray" / "c2" / "dev20_00.png",
    )
    assert Image.open(rgb_file).size != Image.open(xray_file).size  # resized to each stream's input
    assert main(["predict", str(fused_run), str(rgb_file), "--xray", str(xray_file), "--top-k", "2"]) == 0
    assert "c2=" in capsys.readouterr().out
    out = tmp_path / "pairs.json"
    assert (
        main(
            [
                "predict",
                str(fused_run),
                str(pairs_data / "rgb"),
                "--xray",
                str(pairs_data / "xray"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    written = json.loads(out.read_text())
    assert len(written["predictions"]) == 12  # the *_00 stems; the others have no partner of their stem
    assert any("no X-ray image named" in s["reason"] for s in written["skipped"])

    assert main(["evaluate", str(fused_run), "--data", str(pairs_data), "--split", "all"]) == 0
    assert (fused_run / "eval" / f"{pairs_data.name}-all" / "metrics.json").is_file()


def test_fuse_run_exports_to_onnx_with_two_inputs(fused_run: Path, pairs_data: Path):
    ort = pytest.importorskip("onnxruntime")
    from ewaste_vision.export.onnx_export import export_onnx
    from ewaste_vision.fusion.export import FusionProbabilityGraph
    from ewaste_vision.fusion.predictor import FusionPredictor

    (target,) = export_onnx(fused_run)
    session = ort.InferenceSession(str(target))
    assert [i.name for i in session.get_inputs()] == ["rgb", "xray"]
    rgb, xray = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    (onnx_probs,) = session.run(None, {"rgb": rgb.numpy(), "xray": xray.numpy()})
    predictor = FusionPredictor.from_run(fused_run)
    with torch.no_grad():
        torch_probs = FusionProbabilityGraph(predictor.model, predictor.streams)(rgb, xray)
    np.testing.assert_allclose(onnx_probs, torch_probs.numpy(), atol=1e-5)
    # `ewaste predict` on the exported file says what to do instead of failing inside onnxruntime.
    assert main(["predict", str(target), str(pairs_data / "rgb" / "c0" / "dev00_00.png")]) == 2


def test_resume_keeps_finished_streams_and_redoes_only_the_fusion(
    fused_run: Path, pairs_data: Path, tmp_path: Path
):
    run = tmp_path / "resumed"
    shutil.copytree(fused_run, run)
    stream_model = run / "streams" / "rgb" / "model.pt"
    stamp = stream_model.stat().st_mtime_ns
    (run / "model.pt").unlink()  # as if stopped during stage 2
    (run / "metrics.json").unlink()
    args = ["train", str(pairs_data), "--task", "fuse", "--out", str(run), *FAST]
    assert main(args) == 2  # a run is there: no silent overwrite
    assert main([*args, "--resume"]) == 0
    assert (run / "model.pt").is_file() and (run / "metrics.json").is_file()
    assert stream_model.stat().st_mtime_ns == stamp


def test_class_with_rgb_but_no_xray_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    root = make_paired_dataset(tmp_path / "data", classes=3, devices=3)
    shutil.rmtree(root / "xray" / "c1")
    code = main(["train", str(root), "--task", "fuse", "--out", str(tmp_path / "run"), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(root / "xray" / "c1") in err and "no X-ray images" in err
    assert not (tmp_path / "run" / "model.pt").exists()


def test_fusion_flags_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    root = make_paired_dataset(tmp_path / "data", classes=2, devices=3)
    assert (
        main(["train", str(root), "--task", "fuse", "--fusion", "medium", "--out", str(tmp_path / "r")]) == 2
    )
    assert "unknown fusion 'medium'" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "r"), str(root / "rgb"), "--xray", str(root / "xray")]) == 2


def test_serve_runner_classifies_an_uploaded_rgb_and_xray_pair(
    fused_run: Path, pairs_data: Path, tmp_path: Path
):
    # The runner behind the app's "RGB + X-ray" tab and its /fuse endpoint, through the dispatcher
    # (no server: launching Gradio costs more than the rest of this file).
    from ewaste_vision.app.catalog import load_catalog
    from ewaste_vision.app.dispatch import Dispatcher
    from ewaste_vision.app.jobs import WorkArea
    from ewaste_vision.app.limits import ServeLimits
    from ewaste_vision.app.pairs import fusion_jobs

    catalog = load_catalog([fused_run])
    dispatcher = Dispatcher(catalog, {"fuse": fusion_jobs}, ServeLimits(), WorkArea(root=tmp_path / "work"))
    rgb, xray = (
        str(pairs_data / "rgb" / "c2" / "dev20_00.png"),
        str(pairs_data / "xray" / "c2" / "dev20_00.png"),
    )
    pair, alone = dispatcher.run("fuse", [fused_run.name, fused_run.name], [[rgb, xray], [rgb]])
    (image,) = pair.result["images"]
    assert image["file"] == "dev20_00.png" and image["xray"] == "dev20_00.png"
    assert set(image["probabilities"]) == {"c0", "c1", "c2"} and set(image["streams"]) == {"rgb", "xray"}
    assert pair.table is not None and pair.table.read_text().startswith("file,xray,predicted")
    assert "one RGB image and one X-ray image" in alone.result["error"]
