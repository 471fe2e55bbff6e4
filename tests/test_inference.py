"""The inference path: compiled and eager forward passes agree, odd batch sizes included."""

from __future__ import annotations

import pytest
import torch

from ewaste_vision.inference import Predictor
from ewaste_vision.models.classifier import build_classifier
from ewaste_vision.runs import ModelMeta


def _predictor(compile_setting: str) -> Predictor:
    torch.manual_seed(0)
    model, _ = build_classifier("tiny", num_classes=5)
    meta = ModelMeta("classify", list("abcde"), "tiny", 64, (0.5,) * 3, (0.5,) * 3)
    return Predictor(model, meta, precision="32", compile=compile_setting, batch_size=8)


@pytest.mark.slow
def test_compiled_inference_matches_eager_for_full_and_partial_batches():
    images = torch.randn(11, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    eager = _predictor("never")
    compiled = _predictor("always")
    for batch in (images[:8], images[8:]):  # the second batch is padded to the compiled size
        expected = eager.probabilities(batch)
        got = compiled.probabilities(batch)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    assert compiled._compiled is not None and not compiled._compiled.failed


def test_auto_compiles_only_large_jobs():
    predictor = _predictor("auto")
    predictor.probabilities(torch.randn(2, 3, 64, 64), expected_images=10)
    assert predictor._compiled is None


def test_unknown_compile_setting_is_a_user_error():
    from ewaste_vision.errors import UserError

    with pytest.raises(UserError, match="compile"):
        _predictor("sometimes")


@pytest.mark.slow
def test_compiled_feature_extraction_matches_eager(tmp_path, make_image, monkeypatch):
    from ewaste_vision.training import features

    paths = [make_image(tmp_path / f"{i}.png", seed=i) for i in range(5)]
    torch.manual_seed(0)
    model, _ = build_classifier("tiny", num_classes=2)
    eager = features.extract_pooled_features(model, paths, 64, (0.5,) * 3, (0.5,) * 3, views=2, batch_size=4)
    monkeypatch.setattr(features, "COMPILE_MIN_IMAGES", 1)
    compiled = features.extract_pooled_features(
        model, paths, 64, (0.5,) * 3, (0.5,) * 3, views=2, batch_size=4
    )
    assert compiled.shape == eager.shape == (2, 5, model.num_features)
    assert torch.allclose(compiled, eager, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the Ray engine's GPU workers)")
def test_a_predictor_on_the_gpu_gives_the_cpu_probabilities_back_on_the_cpu():
    images = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    model, _ = build_classifier("tiny", num_classes=5)
    meta = ModelMeta("classify", list("abcde"), "tiny", 64, (0.5,) * 3, (0.5,) * 3)
    on_cpu = Predictor(model, meta, precision="32", compile="never").probabilities(images)
    on_gpu = Predictor(model, meta, precision="32", compile="never", device="cuda").probabilities(images)
    assert on_gpu.device.type == "cpu"
    assert torch.allclose(on_gpu, on_cpu, atol=1e-4), (on_gpu - on_cpu).abs().max()
