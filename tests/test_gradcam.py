"""Heatmaps: the fast all-class Grad-CAM against pytorch-grad-cam, the method registry, rendering
and `explain_paths` end to end, on untrained networks at small sizes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from ewaste_vision.errors import UserError
from ewaste_vision.explain.gradcam import all_class_gradcam, gradcam_from_features, upsample_and_normalise
from ewaste_vision.explain.methods import (
    available_cam_methods,
    class_activation_maps,
    get_cam_method,
    resolve_target_layer,
)
from ewaste_vision.explain.render import overlay_heatmap, save_panel, save_png
from ewaste_vision.explain.run import choose_classes, explain_paths, parse_class_selection
from ewaste_vision.models.classifier import ImageClassifier, build_classifier
from ewaste_vision.models.registry import available_backbones, get_backbone_spec
from ewaste_vision.runs import ModelMeta, save_model

NUM_CLASSES = 5


def _model(backbone: str, num_classes: int = NUM_CLASSES, seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    model, _ = build_classifier(backbone, num_classes, pretrained=False)
    return model.eval()


def _pytorch_grad_cam(
    model: ImageClassifier, layer: torch.nn.Module, images: torch.Tensor, k: int
) -> np.ndarray:
    with GradCAM(model, target_layers=[layer]) as cam:
        return cam(images, [ClassifierOutputTarget(k)] * images.shape[0])  # [B, S, S], normalised


@pytest.mark.parametrize(("backbone", "size"), [("tiny", 64), ("resnet18", 64), ("efficientnet_lite0", 96)])
def test_fast_gradcam_equals_pytorch_grad_cam(backbone: str, size: int) -> None:
    model = _model(backbone)
    images = torch.randn(2, 3, size, size)
    ours = upsample_and_normalise(all_class_gradcam(model, images), size).numpy()  # [B, K, S, S]
    layer = model.backbone.get_submodule(get_backbone_spec(backbone).cam_layer)
    for k in range(NUM_CLASSES):
        reference = _pytorch_grad_cam(model, layer, images, k)
        assert np.abs(ours[:, k] - reference).max() < 1e-3, f"class {k}"
    assert ours.max() > 0.99  # not all-zero maps matching trivially


def test_fast_gradcam_is_the_closed_form_for_a_linear_head() -> None:
    model = _model("tiny")
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(images)  # [B, C, h, w]
    cams, logits = gradcam_from_features(model, features, [4, 1])
    h, w = features.shape[-2:]
    weights = model.head.weight.detach()[[4, 1]] / (h * w)  # [K, C]
    expected = torch.einsum("kc,bchw->bkhw", weights, features).relu()
    torch.testing.assert_close(cams, expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(logits, model(images).detach(), rtol=1e-4, atol=1e-5)


def test_fast_gradcam_needs_eval_mode_and_valid_classes() -> None:
    model = _model("tiny")
    images = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="out of range"):
        all_class_gradcam(model, images, [NUM_CLASSES])
    with pytest.raises(ValueError, match="eval mode"):
        all_class_gradcam(model.train(), images)


@pytest.mark.parametrize("backbone", available_backbones())
def test_every_backbone_gives_maps_of_its_feature_size(backbone: str) -> None:
    model = _model(backbone, num_classes=3)
    size = 96
    images = torch.randn(1, 3, size, size)
    cams, logits = class_activation_maps(model, images, [2, 0], "gradcam", backbone)
    with torch.no_grad():
        features = model.forward_features(images)
    assert cams.shape == (1, 2, *features.shape[-2:])
    assert logits.shape == (1, 3)
    assert torch.isfinite(cams).all() and (cams >= 0).all()
    maps = upsample_and_normalise(cams, size)
    assert maps.shape == (1, 2, size, size)
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0


def test_shared_scale_keeps_classes_comparable() -> None:
    strong = torch.zeros(1, 1, 4, 4)
    strong[0, 0, 1, 2] = 4.0
    cams = torch.cat([strong, strong / 4], dim=1)  # [1, 2, 4, 4]: one class a quarter as strong
    per_map = upsample_and_normalise(cams, 16, per_map=True)
    shared = upsample_and_normalise(cams, 16, per_map=False)
    assert per_map[0, 1].max() == pytest.approx(1.0, abs=1e-5)
    assert shared[0, 0].max() == pytest.approx(1.0, abs=1e-5)
    assert shared[0, 1].max() == pytest.approx(0.25, abs=1e-5)
    assert upsample_and_normalise(torch.zeros(1, 1, 4, 4), 8).abs().max() == 0  # no NaN for a blank map


@pytest.mark.parametrize("method", available_cam_methods())
def test_every_registered_method_runs_on_the_tiny_net(method: str) -> None:
    model = _model("tiny", num_classes=3)
    images = torch.randn(2, 3, 32, 32)
    layer = resolve_target_layer(model, "tiny")
    cams, logits = class_activation_maps(model, images, [0, 2], method, "tiny")
    assert cams.shape == (2, 2, 2, 2)  # tiny: 32 px / 16
    assert torch.isfinite(cams).all() and (cams >= 0).all()
    torch.testing.assert_close(logits, model(images).detach(), rtol=1e-4, atol=1e-5)
    assert not layer._forward_hooks and not layer._backward_hooks  # hooks released
    assert all(p.grad is None for p in model.parameters())
    assert get_cam_method(method).summary


def test_a_pytorch_grad_cam_method_rejects_an_unknown_class() -> None:
    # pytorch-grad-cam's own __exit__ would swallow this IndexError and return nothing.
    with pytest.raises(ValueError, match="out of range"):
        class_activation_maps(_model("tiny"), torch.randn(1, 3, 32, 32), [NUM_CLASSES], "gradcam++", "tiny")


def test_target_layer_override_and_unknown_names() -> None:
    model = _model("tiny")
    images = torch.randn(2, 3, 64, 64)
    cams, _ = class_activation_maps(model, images, [1], "gradcam", "tiny", target_layer="backbone.stages.2")
    assert cams.shape == (2, 1, 8, 8)  # an earlier, finer layer: the full-backward Grad-CAM
    reference = _pytorch_grad_cam(model, model.backbone.stages[2], images, 1)
    assert np.abs(upsample_and_normalise(cams, 64)[:, 0].numpy() - reference).max() < 1e-3
    with pytest.raises(UserError, match="no module"):
        class_activation_maps(model, images, [1], "gradcam", "tiny", target_layer="backbone.nope")
    with pytest.raises(UserError, match="unknown CAM method"):
        get_cam_method("nope")


def _gps_jpeg(path: Path) -> Path:
    exif = Image.Exif()
    exif[0x8825] = {2: (45.0, 30.0, 0.0), 1: "N"}  # GPSInfo
    exif[0x010F] = "PhoneMaker"
    Image.new("RGB", (80, 60), (10, 120, 40)).save(path, format="JPEG", exif=exif)
    assert Image.open(path).getexif()  # the source really carries EXIF
    return path


def _has_metadata(path: Path) -> bool:
    with Image.open(path) as opened:
        return bool(opened.getexif()) or "exif" in opened.info


def test_rendered_pngs_carry_no_exif(tmp_path: Path) -> None:
    source = Image.open(_gps_jpeg(tmp_path / "photo.jpg"))
    heatmap = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    overlay = overlay_heatmap(source, heatmap)
    assert overlay.size == source.size and overlay.mode == "RGB"
    single = save_png(overlay, tmp_path / "out" / "capacitor.png")
    panel = save_panel(source, [heatmap, heatmap], ["a  p=0.90", "b  p=0.40"], tmp_path / "out" / "panel.png")
    for path in (single, panel):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not _has_metadata(path)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "capacitor.png",
        "panel.png",
    ]  # no temp files


def test_overlay_blends_image_and_colour_map() -> None:
    image = Image.new("RGB", (8, 8), (200, 100, 50))
    hot = np.ones((4, 4), dtype=np.float32)
    assert np.array_equal(np.asarray(overlay_heatmap(image, hot, alpha=0.0)), np.asarray(image))
    red = np.asarray(overlay_heatmap(image, hot, colormap="jet", alpha=1.0))
    assert red[0, 0, 0] > 100 and red[0, 0, 2] < 10  # jet at 1.0 is dark red
    large = overlay_heatmap(Image.new("RGB", (3000, 1500)), hot, max_side=300)
    assert large.size == (300, 150)


def _run_dir(tmp_path: Path, task: str, bias: list[float], thresholds: list[float] | None) -> Path:
    model = _model("tiny", num_classes=len(bias))
    with torch.no_grad():  # the bias fixes the probabilities; small weights keep the maps non-zero
        model.head.weight.mul_(0.01)
        model.head.bias.copy_(torch.tensor(bias))
    extra = {"thresholds": thresholds} if thresholds else {}
    names = ["capacitor", "ic", "coil", "resistor"][: len(bias)]
    meta = ModelMeta(task, names, "tiny", 64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), extra=extra)
    run = tmp_path / "run"
    run.mkdir()
    save_model(run, model.state_dict(), meta)
    return run


def test_explain_paths_multilabel_top2_above_thresholds(
    tmp_path: Path, make_image: Callable[..., Path]
) -> None:
    # sigmoid(bias) = 0.95, 0.05, 0.88, 0.73; coil's tuned threshold 0.95 excludes it.
    run = _run_dir(tmp_path, "multilabel", [3.0, -3.0, 2.0, 1.0], [0.5, 0.5, 0.95, 0.5])
    images = [
        make_image(tmp_path / "in" / "a" / "board.jpg", 1),
        make_image(tmp_path / "in" / "b" / "board.png", 2),
    ]
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "heatmaps"
    written = explain_paths(run, [tmp_path / "in"], out)
    assert [e.classes for e in written.images] == [["capacitor", "resistor"]] * 2
    assert [e.path for e in written.images] == images
    assert [p for p, _ in written.skipped] == [tmp_path / "in" / "broken.jpg"]
    expected = {
        f"{stem}/{name}.png" for stem in ("board", "board-2") for name in ("capacitor", "resistor", "panel")
    }
    assert {str(p.relative_to(out)) for p in written} == expected
    assert len(written) == 6 and all(p.is_file() and not _has_metadata(p) for p in written)
    assert written.images[0].probabilities[0] == pytest.approx(0.9526, abs=2e-3)


def test_explain_paths_single_label_all_methods_and_class_lists(
    tmp_path: Path, make_image: Callable[..., Path]
) -> None:
    run = _run_dir(tmp_path, "classify", [0.0, 2.0, 1.0], None)
    image = make_image(tmp_path / "photo.png", 3)
    top = explain_paths(run, [image], tmp_path / "top", shared_scale=True)
    assert top.images[0].classes == ["ic", "coil"]  # top 2 by probability, no thresholds
    listed = explain_paths(run, [image], tmp_path / "listed", classes="coil,capacitor", method="layercam")
    assert listed.images[0].classes == ["coil", "capacitor"]
    everything = explain_paths(run, [image], tmp_path / "all", classes="all", method="eigencam")
    assert len(everything) == 4  # three classes and the panel
    with pytest.raises(UserError, match="unknown class"):
        explain_paths(run, [image], tmp_path / "bad", classes="transistor")


def test_class_choice_rules() -> None:
    names = ["a", "b", "c"]
    multilabel = ModelMeta("multilabel", names, "tiny", 64, (0.5,) * 3, (0.5,) * 3)
    probs = torch.tensor([0.2, 0.4, 0.3])
    assert choose_classes(probs, multilabel, 2) == [1]  # none above 0.5: fall back to the top 1
    assert choose_classes(torch.tensor([0.9, 0.6, 0.7]), multilabel, 2) == [0, 2]
    single = ModelMeta("classify", names, "tiny", 64, (0.5,) * 3, (0.5,) * 3)
    assert choose_classes(probs, single, 2) == [1, 2]
    assert parse_class_selection("top3", names) == 3
    assert parse_class_selection("all", names) == [0, 1, 2]
    assert parse_class_selection(" c, a ", names) == [2, 0]
    with pytest.raises(UserError):
        parse_class_selection("top0", names)
