"""Detecting at more than one input size: the merge, the choice on validation, and the detectors."""

from __future__ import annotations

import numpy as np
import torch

from ewaste_vision.detect.model import build_detector
from ewaste_vision.detect.predictor import Detector
from ewaste_vision.detect.scales import candidate_sizes, choose_sizes, detect_sizes, merge_sizes
from ewaste_vision.model_meta import ModelMeta


def _found(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict[str, np.ndarray]:
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "scores": np.asarray(scores, np.float32),
        "labels": np.asarray(labels, np.int64),
    }


def test_merge_keeps_the_best_of_each_object_seen_at_both_sizes():
    small_pass = _found([[0, 0, 10, 10], [50, 50, 90, 90]], [0.6, 0.9], [0, 1])
    native_pass = _found([[1, 0, 10, 10], [20, 20, 24, 24], [50, 50, 90, 90]], [0.8, 0.7, 0.3], [0, 0, 2])
    merged = merge_sizes([small_pass, native_pass], iou=0.6, limit=10)
    # The part both passes found stays once, with the native pass's better score; the small part
    # only the native pass saw is added; the same place under another class is another detection.
    assert merged["scores"].tolist() == np.float32([0.9, 0.8, 0.7, 0.3]).tolist()
    assert merged["labels"].tolist() == [1, 0, 0, 2]
    assert (
        merge_sizes([small_pass, native_pass], iou=0.6, limit=2)["scores"].tolist()
        == np.float32([0.9, 0.8]).tolist()
    )
    assert merge_sizes([small_pass], iou=0.6, limit=10)["labels"].tolist() == [0, 1]


def test_the_native_size_is_a_candidate_only_for_larger_photos():
    assert candidate_sizes(448, 640) == [[448], [448, 640]]
    assert candidate_sizes(448, 470) == [[448]]
    assert candidate_sizes(448, 896) == [[448], [448, 896]]
    assert candidate_sizes(448, 4080) == [[448]]  # a 9x larger photo needs tiles, not one huge pass


def test_the_choice_follows_the_validation_score_and_prefers_fewer_sizes_on_a_tie():
    found = {448: [_found([[0, 0, 10, 10]], [0.9], [0])], 640: [_found([[30, 30, 34, 34]], [0.8], [0])]}

    def boxes_found(merged):
        return float(sum(len(f["scores"]) for f in merged))

    chosen, scores = choose_sizes([[448], [448, 640]], found.__getitem__, boxes_found, 0.6, 10)
    assert chosen == [448, 640] and scores == {"448": 1.0, "448+640": 2.0}
    chosen, _ = choose_sizes([[448], [448, 640]], found.__getitem__, lambda merged: 1.0, 0.6, 10)
    assert chosen == [448]


def test_both_detectors_run_every_size_of_the_run():
    model, _ = build_detector("tiny", 3, "n", 64, pretrained=False)
    meta = ModelMeta("detect", ["a", "b", "c"], "tiny", 64, (0.5,) * 3, (0.25,) * 3, extra={})
    assert detect_sizes(meta) == [64]  # runs from before the choice: their training size
    base = Detector(model, meta, precision="32")
    two = base.at_sizes([64, 96])
    alone = [base.at_sizes([s]) for s in (64, 96)]
    assert [len(d.sized_models) for d in (base, two, *alone)] == [1, 2, 1, 1] and not two.bf16
    image = torch.rand(3, 80, 80)
    (got,) = two.detect_batch([image])
    parts = [{k: v.numpy() for k, v in d.detect_batch([image])[0].items()} for d in alone]
    expected = merge_sizes(parts, model.nms_thresh, model.detections_per_img)
    assert torch.equal(got["labels"], torch.from_numpy(expected["labels"]))
    assert torch.allclose(got["scores"], torch.from_numpy(expected["scores"]))
    assert float(got["scores"][0]) == max(float(p["scores"][0]) for p in parts)
    assert not np.array_equal(got["scores"].numpy(), parts[0]["scores"])  # the second size counts
