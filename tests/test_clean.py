"""`ewaste data clean`: duplicates, broken, tiny and off-topic files flagged, reviewed, moved (never deleted).

Off-topic detection is tested with a stand-in embedding, an 8x8 grey thumbnail as a 64-vector:
the local similarity, the folder's one-sided spread threshold and the bookkeeping are the real
code, and the images are drawn so that the planted off-topic ones are unlike their class in that
space. A pretrained backbone would make the test slow and its scores hard to predict; the
backbone path itself is covered by a run of the `tiny` backbone and the real measurement is
`bench/bench_clean.py`.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ewaste_vision.cli import main
from ewaste_vision.collect.clean import BackboneFeatures, CleanSettings, clean_folder
from ewaste_vision.collect.outliers import folder_off_topic_scores, local_similarity, off_topic_scores
from ewaste_vision.errors import UserError
from fixtures_http import crawl_queries, loopback_web


def phone(seed: int, size: tuple[int, int] = (120, 160)) -> Image.Image:
    """A dark handset on a light table, position and shade varying with the seed."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(200, 240, size=3)))
    draw = ImageDraw.Draw(image)
    x0, y0 = int(width * rng.uniform(0.15, 0.2)), int(height * rng.uniform(0.1, 0.14))
    shade = int(rng.integers(20, 60))
    draw.rounded_rectangle(
        (x0, y0, width - x0, height - y0), radius=width // 12, fill=(shade, shade, shade + 10)
    )
    cam = width // 12  # the camera
    draw.ellipse((x0 + cam, y0 + cam, x0 + 2 * cam, y0 + 2 * cam), fill=(90, 90, 100))
    for _ in range(6):  # scratches and stickers: what tells one photo from another
        left, right = sorted(int(v) for v in rng.integers(x0, width - x0, size=2))
        top, bottom = sorted(int(v) for v in rng.integers(y0, height - y0, size=2))
        draw.rectangle(
            (left, top, right, bottom), fill=tuple(int(shade + v) for v in rng.integers(-20, 40, size=3))
        )
    return image


def screenshot(seed: int, size: tuple[int, int] = (120, 160)) -> Image.Image:
    """A dark app screen with light text lines: off-topic for a class of phone photos."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, (10, 10, 10))
    draw = ImageDraw.Draw(image)
    for row in range(8, size[1] - 8, 12):
        draw.rectangle((6, row, int(rng.integers(40, size[0] - 6)), row + 5), fill=(250, 250, 250))
    return image


def thumbnail_features(paths: Sequence[Path]) -> np.ndarray:
    """Stand-in embedding: the 8x8 grey thumbnail, centred."""
    rows = [np.asarray(Image.open(p).convert("L").resize((8, 8)), dtype=np.float64).ravel() for p in paths]
    matrix = np.stack(rows)  # [N, 64]
    return matrix - 128.0


@pytest.fixture
def crawled(tmp_path: Path) -> Path:
    """Two classes of 12 phones each, and in `iphone`: 2 screenshots, a copy, a resized copy, a
    tiny image and an HTML page saved as .jpg."""
    root = tmp_path / "crawl"
    for name, offset in (("iphone", 0), ("pixel", 100)):
        (root / name).mkdir(parents=True)
        for index in range(12):
            phone(offset + index).save(root / name / f"{index:06d}.jpg", quality=92)
    iphone = root / "iphone"
    screenshot(1).save(iphone / "000100.jpg", quality=92)
    screenshot(2).save(iphone / "000101.jpg", quality=92)
    shutil.copyfile(iphone / "000003.jpg", iphone / "000102.jpg")
    phone(5).resize((96, 128)).save(iphone / "000103.jpg", quality=70)
    phone(40, size=(30, 40)).save(iphone / "000104.jpg")
    (iphone / "000105.jpg").write_bytes(b"<html><body>Access denied</body></html>")
    (root / "manifest.csv").write_text("not read unless it is a crawl manifest\n")
    return root


STAND_IN = CleanSettings(outlier_mads=5.0)
"""The stand-in embedding spreads the drawn phones more than a backbone spreads real ones (their
scores reach 3); the screenshots score over 100, so a threshold of 5 keeps a wide margin."""

EXPECTED_FLAGS = {
    "iphone/000100.jpg": "off_topic",
    "iphone/000101.jpg": "off_topic",
    "iphone/000102.jpg": "duplicate",
    "iphone/000103.jpg": "near_duplicate",
    "iphone/000104.jpg": "tiny",
    "iphone/000105.jpg": "not_image",
}


def test_clean_flags_each_kind_and_nothing_else(crawled: Path) -> None:
    report = clean_folder(crawled, STAND_IN, features=thumbnail_features)
    flags = {v.file: v.reason for v in report.files if v.reason}
    assert flags == EXPECTED_FLAGS
    verdicts = {v.file: v for v in report.files}
    assert verdicts["iphone/000102.jpg"].same_as == "iphone/000003.jpg"
    assert verdicts["iphone/000103.jpg"].same_as == "iphone/000005.jpg"  # the larger copy is kept
    assert (
        verdicts["iphone/000100.jpg"].score
        > 3
        > max(v.score for v in report.files if v.class_name == "iphone" and v.accepted)
    )
    assert len(report.files) == 30  # nothing outside class folders (manifest.csv) counted

    saved = json.loads((crawled / "clean_report.json").read_text())
    assert saved["counts"] == {
        "accepted": 24,
        "duplicate": 1,
        "near_duplicate": 1,
        "not_image": 1,
        "off_topic": 2,
        "tiny": 1,
    }
    page = (crawled / "review.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 5 + 2 * 6  # flagged images + typical ones
    assert "not an image" in page and "iphone/000101.jpg" in page
    assert sorted(p.name for p in (crawled / "iphone").iterdir())[-1] == "000105.jpg"  # nothing moved yet


def test_apply_moves_everything_deletes_nothing_and_is_idempotent(crawled: Path) -> None:
    before = sorted(p.read_bytes() for p in crawled.glob("*/*.jpg"))
    report = clean_folder(crawled, STAND_IN, apply=True, features=thumbnail_features)
    assert report.moved == 30
    assert not list(crawled.glob("iphone/*")) and not list(crawled.glob("pixel/*"))
    assert len(list((crawled / "_accepted").rglob("*.jpg"))) == 24
    for file, reason in EXPECTED_FLAGS.items():
        assert (crawled / "_rejected" / reason / file).is_file()
    after = sorted(
        p.read_bytes()
        for p in crawled.rglob("*.jpg")
        if p.parts[-3] in ("_accepted", *EXPECTED_FLAGS.values())
    )
    assert after == before  # every byte still there
    moves = list(csv.DictReader((crawled / "clean_moves.csv").open()))
    assert len(moves) == 30 and {m["to"].split("/")[0] for m in moves} == {"_accepted", "_rejected"}

    review = (crawled / "review.html").read_text()
    again = clean_folder(crawled, STAND_IN, apply=True, features=thumbnail_features)
    assert again.already_applied and again.moved == 0
    assert (crawled / "review.html").read_text() == review  # the reviewed page is not overwritten
    assert len(list(csv.DictReader((crawled / "clean_moves.csv").open()))) == 30


def test_decisions_file_overrules_the_cleaner(crawled: Path) -> None:
    (crawled / "decisions.txt").write_text(
        "# after review\nkeep iphone/000100.jpg\nreject pixel/000004.jpg  # blurry\n"
    )
    report = clean_folder(crawled, STAND_IN, apply=True, features=thumbnail_features)
    verdicts = {v.file: v for v in report.files}
    assert (
        verdicts["iphone/000100.jpg"].accepted and verdicts["iphone/000100.jpg"].decided_by == "decisions.txt"
    )
    assert verdicts["pixel/000004.jpg"].reason == "manual"
    assert (crawled / "_accepted/iphone/000100.jpg").is_file()
    assert (crawled / "_rejected/manual/pixel/000004.jpg").is_file()


@pytest.mark.parametrize(
    ("line", "problem"),
    [("delete iphone/000001.jpg", "expected 'keep"), ("keep iphone/999999.jpg", "is not in")],
)
def test_bad_decisions_line_is_one_line_naming_file_and_line(crawled: Path, capsys, line, problem) -> None:
    (crawled / "decisions.txt").write_text("keep iphone/000001.jpg\n" + line + "\n")
    with pytest.raises(UserError, match=rf"decisions\.txt:2: .*{problem}"):
        clean_folder(crawled, CleanSettings(), features=thumbnail_features)
    assert main(["data", "clean", str(crawled), "--backbone", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (crawled / "iphone/000001.jpg").is_file()


def test_cli_with_a_backbone_writes_review_and_report(crawled: Path, capsys) -> None:
    # The tiny backbone is untrained: its off-topic verdicts are not checked, only that the
    # embedding path runs end to end and the other checks land.
    assert main(["data", "clean", str(crawled), "--backbone", "tiny", "--min-size", "50"]) == 0
    out = capsys.readouterr().out
    assert "30 files" in out and "1 duplicate" in out and "1 tiny" in out and "1 not_image" in out
    assert "--apply" in out
    saved = json.loads((crawled / "clean_report.json").read_text())
    scored = [f for f in saved["files"] if f["class_name"] == "pixel"]
    assert all(isinstance(f["similarity"], float) for f in scored)


def test_backbone_features_are_pooled_and_deterministic(crawled: Path) -> None:
    paths = sorted((crawled / "pixel").iterdir())[:3]
    embed = BackboneFeatures(CleanSettings(backbone="tiny", batch_size=2))
    first = embed(paths)
    assert first.shape[0] == 3 and first.ndim == 2 and np.isfinite(first).all()
    assert np.allclose(first, embed(paths))


def test_small_classes_are_not_scored_for_off_topic(tmp_path: Path) -> None:
    for index in range(4):
        (tmp_path / "few").mkdir(exist_ok=True)
        phone(index).save(tmp_path / "few" / f"{index}.jpg")
    screenshot(0).save(tmp_path / "few" / "shot.jpg")
    report = clean_folder(tmp_path, CleanSettings(), features=thumbnail_features)
    assert all(v.accepted for v in report.files)
    assert "fewer than 8" in report.classes["few"]["off_topic"]


def test_not_a_class_folder_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "loose.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="no class folders"):
        clean_folder(tmp_path, features=thumbnail_features)
    with pytest.raises(UserError, match="--min-size"):
        CleanSettings(min_size=0)


def test_a_group_of_alike_off_topic_images_smaller_than_the_neighbours_is_flagged() -> None:
    rng = np.random.default_rng(0)
    on_topic = np.eye(16)[0] + 0.1 * rng.normal(size=(40, 16))
    off_topic = np.eye(16)[1] + 0.05 * rng.normal(size=(5, 16))  # five near-identical boards
    scores = off_topic_scores(np.concatenate([on_topic, off_topic]), mads=2.0, neighbours=7)
    assert scores.flagged[40:].all() and not scores.flagged[:40].any()
    # With fewer neighbours than the group, the boards vouch for each other and pass.
    assert not off_topic_scores(np.concatenate([on_topic, off_topic]), neighbours=3).flagged[40:].any()


def _class_with_known_similarities(index: int, upper_sd: float, outliers: list[float]) -> np.ndarray:
    """24 on-topic rows and `outliers` of class `index` (of 4): row i is a_i along the class's axis
    plus a private axis of its own, so that cos(i, j) = a_i a_j and a local similarity is a_i times
    about the mean of the 7 largest a. The on-topic a are normal quantiles around 0.8, sd 0.02
    below the middle and `upper_sd` above it."""
    quantiles = np.array([NormalDist().inv_cdf((k + 0.5) / 24) for k in range(24)])
    a = np.concatenate([0.8 + np.where(quantiles < 0, 0.02, upper_sd) * quantiles, outliers])
    rows = np.zeros((len(a), 4 + len(a)))
    rows[:, index] = a
    rows[np.arange(len(a)), 4 + np.arange(len(a))] = np.sqrt(1 - a**2)
    return rows


def test_one_spread_for_the_folder_catches_outliers_a_chance_wide_class_hides() -> None:
    # Three classes alike; in the fourth the upper half happens to spread 2.5 times wider (a
    # spread from ~12 values: by chance), which hides its outliers when each class is scored alone.
    classes = [_class_with_known_similarities(i, 0.02, [0.70, 0.71, 0.72]) for i in range(3)]
    classes.append(_class_with_known_similarities(3, 0.05, [0.73, 0.735, 0.74]))
    pooled = folder_off_topic_scores(classes, mads=1.75)
    assert all(s.flagged[24:].all() and not s.flagged[:24].any() for s in pooled)
    assert len({s.spread for s in pooled}) == 1
    alone = off_topic_scores(classes[3], mads=1.75)
    assert not alone.flagged[24:].any()  # the per-class spread this replaced misses all three
    assert alone.spread > 1.5 * pooled[3].spread


def test_local_similarity_matches_a_brute_force_count() -> None:
    features = np.random.default_rng(1).normal(size=(30, 8))
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    expected = np.sort(similarity, axis=1)[:, -4:].mean(axis=1)
    assert np.allclose(local_similarity(features, neighbours=4), expected)


def test_identical_images_flag_nothing() -> None:
    scores = off_topic_scores(np.ones((10, 8)) + 1e-6 * np.arange(80).reshape(10, 8))
    assert not scores.flagged.any()


@pytest.fixture
def web(monkeypatch):
    """The loopback hosts of `fixtures_http.loopback_web`."""
    with loopback_web(monkeypatch) as hosts:
        yield hosts


def test_crawl_then_clean_carries_each_file_source_url(tmp_path: Path, web) -> None:
    # The whole path of 003: crawl from the loopback hosts, then clean; the review keeps the source.
    out = tmp_path / "crawl"
    assert main(["data", "crawl", str(crawl_queries(tmp_path, web)), "--out", str(out)]) == 0
    report = clean_folder(out, STAND_IN, features=thumbnail_features)
    assert len(report.files) == 5 and all(v.source_url.startswith("http://127.0.0.1:") for v in report.files)
    assert web["main"].url("/img/1.jpg") in {v.source_url for v in report.files}
    saved = json.loads((out / "clean_report.json").read_text())
    assert {f["source_url"] for f in saved["files"]} == {v.source_url for v in report.files}


def test_review_links_only_web_sources(tmp_path: Path) -> None:
    from ewaste_vision.collect.clean import FileVerdict
    from ewaste_vision.collect.review_html import _card

    web = FileVerdict("a/1.jpg", "a", reason="tiny", source_url="https://example.org/1.jpg")
    script = FileVerdict("a/2.jpg", "a", reason="tiny", source_url="javascript:alert(1)")
    assert "href='https://example.org/1.jpg'" in _card(tmp_path, web, choice=True)
    assert "javascript:" not in _card(tmp_path, script, choice=True)


def test_decisions_and_manifest_in_another_encoding_are_one_line_errors(tmp_path: Path) -> None:
    from ewaste_vision.collect.clean import _read_decisions
    from ewaste_vision.collect.manifest import read_manifest

    (tmp_path / "decisions.txt").write_bytes("keep a/caf\u00e9.jpg\n".encode("cp1252"))
    (tmp_path / "manifest.csv").write_bytes("class_name\ncaf\u00e9\n".encode("cp1252"))
    with pytest.raises(UserError, match=r"decisions.txt: not UTF-8 text \(byte 10\); save it as UTF-8"):
        _read_decisions(tmp_path, {"a/caf\u00e9.jpg"})
    with pytest.raises(UserError, match=r"manifest.csv: not UTF-8 text \(byte 14\)"):
        read_manifest(tmp_path / "manifest.csv")
