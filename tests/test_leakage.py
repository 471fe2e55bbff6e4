"""Augmented copies of one photo are found across splits, and the finder is scored fairly."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ewaste_vision.cli import main
from ewaste_vision.data.check import check_dataset, format_report
from ewaste_vision.data.leakage import (
    CopyEvidence,
    CopySettings,
    find_augmented_copies,
    find_copy_groups,
    group_copies,
    pair_precision_recall,
    read_source_groups,
)
from ewaste_vision.data.yolo import read_yolo
from ewaste_vision.data.yolo_split import multilabel_grouped_split


def draw_board(path: Path, seed: int, size: int = 192) -> Path:
    """A busy image of many small coloured parts: texture for keypoints, like a circuit board."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(80):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        w, h = (int(v) for v in rng.integers(3, 30, 2))
        draw.rectangle([x, y, x + w, y + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def hue_shifted(image: Image.Image, shift: int = 18) -> Image.Image:
    """Hue turned by `shift`/256 of the circle (18 is about 25 degrees, a typical augmentation)."""
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + shift) % 256
    return Image.fromarray(hsv, mode="HSV").convert("RGB")


AUGMENTATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "hflip": lambda image: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "rot90": lambda image: image.transpose(Image.Transpose.ROTATE_90),
    "grayscale": lambda image: image.convert("L").convert("RGB"),
    "hue": hue_shifted,
    "rot270_hue": lambda image: hue_shifted(image.transpose(Image.Transpose.ROTATE_270), -18),
    "tilt_crop_gray": lambda image: (
        image.rotate(12, resample=Image.Resampling.BILINEAR)
        .crop((14, 14, image.width - 14, image.height - 14))
        .resize(image.size)
        .convert("L")
    ),
}


def test_pair_precision_recall_on_a_hand_made_example() -> None:
    # Truth: {0,1,2} {3,4} {5}: 3 + 1 = 4 pairs. Found: {0,1} {2,3,4} {5} and 6 unreadable:
    # 1 + 3 = 4 pairs, of which (0,1) and (3,4) are right.
    scores = pair_precision_recall([0, 0, 1, 1, 1, 2, -1], ["a", "a", "a", "b", "b", "c", "d"])
    assert scores == {
        "precision": 0.5,
        "recall": 0.5,
        "predicted_pairs": 4,
        "true_pairs": 4,
        "correct_pairs": 2,
    }
    assert pair_precision_recall([-1, -1], ["a", "b"])["precision"] == 1.0  # nothing predicted
    with pytest.raises(ValueError, match="got 2 predicted"):
        pair_precision_recall([0, 0], ["a"])


@pytest.fixture
def augmented(tmp_path: Path) -> list[Path]:
    """Two source images, each followed by its augmented copies, then three unrelated images."""
    paths = []
    for seed in (11, 12):
        source = draw_board(tmp_path / f"source{seed}.png", seed)
        paths.append(source)
        for name, augment in AUGMENTATIONS.items():
            copy = tmp_path / f"{seed}_{name}.jpg"
            augment(Image.open(source).convert("RGB")).save(copy, quality=90)
            paths.append(copy)
    paths += [draw_board(tmp_path / f"other{seed}.png", seed) for seed in (21, 22, 23)]
    return paths


def test_augmented_copies_are_grouped_and_different_images_are_not(augmented: list[Path]) -> None:
    groups = find_augmented_copies(augmented)
    copies = len(AUGMENTATIONS) + 1
    first, second, others = groups[:copies], groups[copies : 2 * copies], groups[2 * copies :]
    assert len(set(first)) == 1 and len(set(second)) == 1, groups
    assert len({first[0], second[0], *others}) == 5, groups


def test_keypoint_stage_finds_what_the_hash_alone_misses(tmp_path: Path) -> None:
    source = draw_board(tmp_path / "source.png", 31)
    tilted = tmp_path / "tilted.jpg"  # a small rotation plus a crop: beyond any perceptual hash
    AUGMENTATIONS["tilt_crop_gray"](Image.open(source)).save(tilted, quality=90)
    other = draw_board(tmp_path / "other.png", 32)
    paths = [source, tilted, other]
    assert len(set(find_augmented_copies(paths, candidates=0, word_candidates=0))) == 3
    groups = find_augmented_copies(paths)
    assert groups[0] == groups[1] != groups[2]


def test_check_reports_copies_across_splits_in_a_yolo_dataset(tmp_path: Path) -> None:
    root = tmp_path / "boards"
    source = draw_board(root / "train" / "images" / "board.png", 41)
    draw_board(root / "train" / "images" / "other.png", 42)
    (root / "valid" / "images").mkdir(parents=True)
    AUGMENTATIONS["rot270_hue"](Image.open(source)).save(root / "valid" / "images" / "board_aug.jpg")
    for split, stem, text in (
        ("train", "board", "0 0.5 0.5 0.2 0.2\n"),
        ("train", "other", "1 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n"),
        ("valid", "board_aug", "0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n"),
    ):
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        (root / split / "labels" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text("train: train/images\nval: valid/images\nnames: [ic, led]\n")

    report = check_dataset(root)
    assert report.multi_label and report.total == 3
    assert report.counts == {"ic": {"train": 1, "val": 1}, "led": {"train": 1, "val": 0}}
    assert [[(split, path.name) for split, path in group] for group in report.cross_split] == [
        [("train", "board.png"), ("val", "board_aug.jpg")]
    ]
    label_file = root / "valid" / "labels" / "board_aug.txt"
    assert [why.split(": ")[0] for _, why in report.label_problems] == [f"{label_file.resolve()}:2"]
    text = format_report(report)
    assert "duplicate groups across splits: 1" in text and "label problems: 1" in text
    assert report.to_dict()["cross_split"][0][1] == {"split": "val", "file": "valid/images/board_aug.jpg"}

    assert main(["data", "check", str(root)]) == 0


HELD_OUT_SOURCES = 60
"""Sources of the held-out half checked in CI (about 150 images; the bench scores all 1005).

The whole held-out half scores pair precision 1.000 and recall 0.991 (bench/bench_leakage.py); these
60 sources (149 images, 135 same-source pairs) scored 1.000 and 1.000 (the finder before the pixel
check: 1.000 and 0.956). The bounds are the issue's target, 0.97, so a finder that misses it fails.
About 40 s of CPU."""

PRECISION_AT_LEAST = 0.97
RECALL_AT_LEAST = 0.97


@pytest.mark.real_data
def test_pcb_components_held_out_sources_are_found_and_never_leak(shared_data: Path) -> None:
    root = shared_data / "pcb-components"
    if not (root / "source_groups.csv").is_file():
        pytest.skip(f"{root}/source_groups.csv not found")
    dataset, summary = read_yolo(root)
    assert summary.polygons_converted > 0  # polygon lines are read as boxes, not skipped
    assert not any("field count" in why for _, why in dataset.skipped)
    paths, truth = read_source_groups(root)
    assert len(paths) == len(dataset.records)

    # The thresholds were tuned on half A of the sources (bench/bench_leakage.py, seed 0, with the
    # source names that show one board merged); these sources come from half B, which tuning never saw.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from bench_leakage import corrected, halves

    truth = corrected(truth)
    half_b = halves(truth, seed=0)[1]
    held_out = sorted({truth[index] for index in half_b})[:HELD_OUT_SOURCES]
    chosen = [index for index in half_b if truth[index] in held_out]
    found = find_copy_groups([paths[index] for index in chosen])
    chosen_truth = [truth[index] for index in chosen]
    scores = pair_precision_recall(found.copies, chosen_truth)
    # Measured on these 60 sources: see the comment at HELD_OUT_SOURCES.
    assert scores["precision"] >= PRECISION_AT_LEAST and scores["recall"] >= RECALL_AT_LEAST, scores

    by_path = {record.path.resolve(): record for record in dataset.records}
    present = [by_path[paths[index].resolve()].present for index in chosen]
    splits = multilabel_grouped_split(present, found.together, len(dataset.class_names))
    splits_of: dict[str, set[str]] = {}
    for source, split in zip(chosen_truth, splits, strict=True):
        splits_of.setdefault(source, set()).add(split)
    leaking = sorted(source for source, found_in in splits_of.items() if len(found_in) > 1)
    assert leaking == []


def test_uncertain_links_widen_only_the_groups_kept_together() -> None:
    # Five images: 0-1 share many keypoints and their pixels agree (a copy), 1-2 share only a few,
    # 3-4 are look-alike mutual nearest neighbours; image 5 is unreadable.
    evidence = CopyEvidence(size=6, readable=[0, 1, 2, 3, 4], md5=["a", "b", "c", "d", "e", ""])
    pairs = np.array([[0, 1], [1, 2], [3, 4]])
    phash = np.full((5, 5), 30)
    evidence.add(
        pairs,
        phash,
        np.array([0.5, 0.5, 0.95]),
        np.array([False, False, True]),
        np.array([40, 9, 0]),
        dense=np.array([0.9, 0.2, -1.0]),
    )
    settings = CopySettings(min_inliers=10, uncertain_inliers=8, uncertain_similarity=0.9)
    found = group_copies(evidence, settings)
    assert found.copies == [0, 0, 1, 2, 3, -1]
    assert found.together == [0, 0, 0, 1, 1, -1]
    strict = replace(
        settings, uncertain_inliers=10, uncertain_similarity=0.99, orphan_dense=1.01, orphan_similarity=1.01
    )
    stricter = group_copies(evidence, strict)
    assert stricter.together == stricter.copies
    # An image with no copy is kept with its best-agreeing candidate and with its most similar one.
    assert group_copies(evidence, replace(strict, orphan_dense=0.15)).together == [0, 0, 0, 1, 2, -1]
    assert group_copies(evidence, replace(strict, orphan_similarity=0.9)).together == [0, 0, 1, 2, 2, -1]
    # Shared keypoints whose pixels disagree (a look-alike part) are only kept together, never a copy.
    look_alike = replace(evidence, dense=np.array([0.3, 0.2, -1.0]))
    assert group_copies(look_alike, settings).copies == [0, 1, 2, 3, 4, -1]
    assert group_copies(look_alike, settings).together == [0, 0, 0, 1, 1, -1]
    # Pixels that agree once aligned make a copy without keypoints (a dark or blurred close-up).
    dark = replace(evidence, dense=np.array([0.3, 0.2, 0.95]))
    assert group_copies(dark, settings).copies == [0, 1, 2, 3, 3, -1]
    # Restricting the evidence to some images renumbers them and keeps only their pairs.
    assert group_copies(evidence.restricted([1, 2, 4]), settings).together == [0, 0, 1]


def test_check_lists_every_group_across_splits_and_the_possible_ones(tmp_path: Path) -> None:
    from ewaste_vision.data.check import DataReport

    counts = {"ic": {"train": 25, "test": 25}}
    report = DataReport(root=tmp_path, class_names=["ic"], splits=["train", "test"], counts=counts)
    report.cross_split = [
        [("train", tmp_path / f"a{index}.jpg"), ("test", tmp_path / f"b{index}.jpg")] for index in range(25)
    ]
    report.possible_cross_split = [[("train", tmp_path / "c.jpg"), ("test", tmp_path / "d.jpg")]]
    text = format_report(report)
    assert "duplicate groups across splits: 25" in text and "more" not in text
    assert all(f"b{index}.jpg [test]" in text for index in range(25))
    assert "possible copies across splits: 1 groups" in text and "d.jpg [test]" in text
    assert report.to_dict()["possible_cross_split"] == [
        [{"split": "train", "file": "c.jpg"}, {"split": "test", "file": "d.jpg"}]
    ]


def test_one_chance_link_does_not_join_two_groups_of_copies() -> None:
    # Two photos with two copies each (0-1, 2-3), and one strong-looking link 1-2 between them:
    # one of the four pairs between the groups, as with look-alike parts.
    evidence = CopyEvidence(size=4, readable=[0, 1, 2, 3], md5=["a", "b", "c", "d"])
    pairs = np.array([[0, 1], [2, 3], [1, 2]])
    evidence.add(
        pairs, np.full((4, 4), 30), np.zeros(3), np.zeros(3, bool), np.array([50, 50, 30]), np.full(3, 0.9)
    )
    found = group_copies(evidence, CopySettings(min_linked_share=0.5))
    assert found.copies == [0, 0, 1, 1]
    assert found.together == [0, 0, 0, 0]  # the split still keeps them together
    assert group_copies(evidence, CopySettings(min_linked_share=0.0)).copies == [0, 0, 0, 0]
    # With links between most of their pairs, the groups do merge.
    most = CopyEvidence(size=4, readable=[0, 1, 2, 3], md5=["a", "b", "c", "d"])
    pairs = np.array([[0, 1], [2, 3], [1, 2], [0, 2]])
    most.add(pairs, np.full((4, 4), 30), np.zeros(4), np.zeros(4, bool), np.full(4, 50), np.full(4, 0.9))
    assert group_copies(most, CopySettings(min_linked_share=0.5)).copies == [0, 0, 0, 0]
