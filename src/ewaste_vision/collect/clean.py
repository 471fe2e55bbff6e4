"""`ewaste data clean DIR`: flag what a crawl brought that should not be trained on, then move it aside.

003 removed irrelevant crawled images by hand. This step does the looking and leaves the deciding
to a person: every file in `DIR/CLASS/` is checked, in this order, and the first reason found is
its flag:

1. `not_image`: cannot be decoded (`data/images.py`'s reader);
2. `duplicate`: byte-identical (sha256) to a file kept earlier;
3. `tiny`: short side under `min_size` pixels;
4. `near_duplicate`: a resized or recompressed copy (`data/dedup.py`'s perceptual hash) of a
   larger file that is kept;
5. `off_topic`: far from its nearest neighbours of the same class in the embedding space of an
   ImageNet backbone (`outliers.py`): chargers, boxes, screenshots.

It writes `DIR/review.html` (thumbnails, reasons, scores, and a form that writes the decisions
file) and `DIR/clean_report.json`. A person reviews; `DIR/decisions.txt` may overrule any verdict
(`keep CLASS/FILE` or `reject CLASS/FILE`, one a line); `--apply` then moves every file into
`DIR/_accepted/CLASS/` or `DIR/_rejected/REASON/CLASS/`, nothing deleted, every move recorded in
`DIR/clean_moves.csv`. The checks are deterministic, so `--apply` moves exactly what was reviewed.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ewaste_vision.collect.manifest import ACCEPTED_DIR, MANIFEST_NAME, read_manifest
from ewaste_vision.collect.outliers import folder_off_topic_scores
from ewaste_vision.data.dedup import Fingerprint, fingerprints_cached, group_duplicates
from ewaste_vision.errors import UserError
from ewaste_vision.io.atomic import write_json

log = logging.getLogger(__name__)

REASONS = ("not_image", "duplicate", "tiny", "near_duplicate", "off_topic", "manual")
"""Flags, in the order they are checked; `manual` is a reject from the decisions file."""

REPORT_NAME = "clean_report.json"
REVIEW_NAME = "review.html"
DECISIONS_NAME = "decisions.txt"
MOVES_NAME = "clean_moves.csv"
REJECTED_DIR = "_rejected"
_CACHE_NAME = ".clean_fingerprints.json"

FeatureFunction = Callable[[Sequence[Path]], np.ndarray]
"""Image files -> embeddings [N, C]."""


@dataclass(frozen=True)
class CleanSettings:
    """How `clean_folder` judges files.

    Attributes:
        backbone: registered backbone whose pooled ImageNet features place the images.
        min_size: images whose short side is below this (pixels) are `tiny`.
        outlier_mads: an image is `off_topic` when its local similarity (to its nearest
            neighbours in the class) is this many spreads below the class's median, the spread
            pooled over the folder's classes (`outliers.py`); 1.75 was chosen on the bench's dev
            half, for recall first (a person reviews the flags).
        neighbours: nearest images of the class that a local similarity averages.
        near_duplicate_bits: perceptual hashes differing in at most this many of 64 bits are copies.
        min_class_for_outliers: classes with fewer candidates are not searched for off-topic
            images (a median of a handful says little).
        batch_size: images per forward pass.
    """

    backbone: str = "efficientnet_lite0"
    min_size: int = 64
    outlier_mads: float = 1.75
    neighbours: int = 7
    near_duplicate_bits: int = 4
    min_class_for_outliers: int = 8
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.min_size < 1:
            raise UserError(f"--min-size must be at least 1, got {self.min_size}")
        if self.outlier_mads <= 0:
            raise UserError(f"--outlier-mads must be above 0, got {self.outlier_mads}")
        if self.neighbours < 1:
            raise UserError(f"neighbours must be at least 1, got {self.neighbours}")


@dataclass
class FileVerdict:
    """What the cleaner thinks of one file.

    Attributes:
        file: path relative to the cleaned folder, `CLASS/NAME`.
        class_name: its class folder.
        reason: "" when accepted, else one of `REASONS`.
        detail: a few words on the reason.
        width: pixels (0 when unreadable).
        height: pixels.
        similarity: local similarity (mean cosine similarity to the nearest images of the class),
            when scored.
        score: how many (folder) spreads below the class's median that is (above `outlier_mads` is
            off-topic).
        same_as: for duplicates, the file kept instead.
        decided_by: `auto`, or `decisions.txt` when a person overruled.
        source_url: from the crawl manifest, when there is one.
    """

    file: str
    class_name: str
    reason: str = ""
    detail: str = ""
    width: int = 0
    height: int = 0
    similarity: float | None = None
    score: float | None = None
    same_as: str = ""
    decided_by: str = "auto"
    source_url: str = ""

    @property
    def accepted(self) -> bool:
        return not self.reason


@dataclass
class CleanReport:
    """Everything `clean_folder` found and did.

    Attributes:
        root: the cleaned folder.
        settings: how it judged.
        files: one verdict per file, in path order.
        classes: per class: files, flagged, and the off-topic median/threshold (or why not scored).
        moved: files moved by `--apply`.
        already_applied: nothing was left to clean because an earlier `--apply` moved it all.
    """

    root: Path
    settings: CleanSettings
    files: list[FileVerdict]
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)
    moved: int = 0
    already_applied: bool = False

    def counts(self) -> Counter[str]:
        """Files by reason ("" = accepted)."""
        return Counter(verdict.reason for verdict in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "settings": asdict(self.settings),
            "counts": {reason or "accepted": count for reason, count in sorted(self.counts().items())},
            "classes": self.classes,
            "files": [asdict(verdict) for verdict in self.files],
        }

    def describe(self) -> str:
        """A few lines for the terminal."""
        if self.already_applied:
            return (
                f"nothing left to clean in {self.root}: already applied (moves in {self.root / MOVES_NAME})"
            )
        counts = self.counts()
        flagged = ", ".join(f"{counts[reason]} {reason}" for reason in REASONS if counts[reason])
        lines = [
            f"{len(self.files)} files: {counts['']} accepted" + (f", flagged {flagged}" if flagged else "")
        ]
        for name, info in self.classes.items():
            lines.append(
                f"  {name}: {info['files']} files, {info['flagged']} flagged"
                + (
                    f" (off-topic not scored: {info['off_topic']})"
                    if isinstance(info.get("off_topic"), str)
                    else ""
                )
            )
        lines.append(f"review: {self.root / REVIEW_NAME}  report: {self.root / REPORT_NAME}")
        if self.moved:
            lines.append(
                f"moved {self.moved} files into {self.root / ACCEPTED_DIR} and {self.root / REJECTED_DIR} "
                f"(list: {self.root / MOVES_NAME}); train on {self.root / ACCEPTED_DIR}"
            )
        else:
            lines.append(f"nothing moved; after review run: ewaste data clean {self.root} --apply")
        return "\n".join(lines)


def clean_folder(
    root: Path | str,
    settings: CleanSettings | None = None,
    apply: bool = False,
    progress: bool = False,
    features: FeatureFunction | None = None,
) -> CleanReport:
    """Check every file of a class-folder dataset; write the review page and report; maybe move.

    Args:
        root: folder of class folders (`CLASS/FILE`); `_`-prefixed folders are the cleaner's own.
        settings: thresholds and the backbone.
        apply: move files to `_accepted/` and `_rejected/REASON/` after writing the report.
        progress: print progress to stderr.
        features: embedding function; default: `settings.backbone`'s pooled ImageNet features.

    Raises:
        UserError: `root` is not a folder of class folders, or the decisions file is malformed.
    """
    from ewaste_vision.collect.review_html import write_review

    settings = settings or CleanSettings()
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: not a folder; give the folder that holds one folder per class")
    files = _class_files(root)
    if not files:
        if (root / ACCEPTED_DIR).is_dir() or (root / REJECTED_DIR).is_dir():
            return CleanReport(root, settings, [], already_applied=True)
        raise UserError(f"{root}: no class folders with files in them; expected {root}/CLASS/IMAGE")
    sources = {row.file: row.source_url for row in read_manifest(root / MANIFEST_NAME) if row.file}
    verdicts = [
        FileVerdict(file=path.relative_to(root).as_posix(), class_name=path.relative_to(root).parts[0])
        for path in files
    ]
    for verdict in verdicts:
        verdict.source_url = sources.get(verdict.file, "")
    decisions = _read_decisions(root, {verdict.file for verdict in verdicts})  # bad lines fail first
    if progress:
        print(f"checking {len(files)} files", file=sys.stderr)
    fingerprints = fingerprints_cached(files, root / _CACHE_NAME, progress=progress)
    _flag_unreadable_and_sizes(files, verdicts, fingerprints, settings)
    _flag_exact_duplicates(files, verdicts)
    _flag_tiny(verdicts, settings)
    _flag_near_duplicates(verdicts, fingerprints, settings)
    classes = _flag_off_topic(files, verdicts, settings, features or BackboneFeatures(settings), progress)
    _apply_decisions(decisions, verdicts)
    for name, info in classes.items():
        info["flagged"] = sum(1 for v in verdicts if v.class_name == name and not v.accepted)
    report = CleanReport(root, settings, verdicts, classes)
    write_json(root / REPORT_NAME, report.to_dict())
    write_review(report, root / REVIEW_NAME)
    if apply:
        report.moved = _move_files(report)
    return report


def _class_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        files += sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    return files


def _flag_unreadable_and_sizes(
    files: list[Path],
    verdicts: list[FileVerdict],
    fingerprints: list[Fingerprint | None],
    settings: CleanSettings,
) -> None:
    from ewaste_vision.data.dedup import unreadable_reason

    for path, verdict, fingerprint in zip(files, verdicts, fingerprints, strict=True):
        if fingerprint is None:
            verdict.reason, verdict.detail = "not_image", unreadable_reason(path) or "cannot be decoded"
            continue
        with Image.open(path) as image:
            verdict.width, verdict.height = image.size


def _flag_exact_duplicates(files: list[Path], verdicts: list[FileVerdict]) -> None:
    first_with: dict[str, str] = {}
    for path, verdict in zip(files, verdicts, strict=True):
        if verdict.reason:
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in first_with:
            verdict.reason, verdict.same_as = "duplicate", first_with[digest]
            verdict.detail = "byte-identical to " + first_with[digest]
        else:
            first_with[digest] = verdict.file


def _flag_tiny(verdicts: list[FileVerdict], settings: CleanSettings) -> None:
    for verdict in verdicts:
        if not verdict.reason and min(verdict.width, verdict.height) < settings.min_size:
            verdict.reason = "tiny"
            verdict.detail = f"{verdict.width}x{verdict.height}, short side under {settings.min_size} px"


def _flag_near_duplicates(
    verdicts: list[FileVerdict], fingerprints: list[Fingerprint | None], settings: CleanSettings
) -> None:
    candidates = [i for i, verdict in enumerate(verdicts) if not verdict.reason]
    groups = group_duplicates([fingerprints[i] for i in candidates], settings.near_duplicate_bits)
    members: dict[int, list[int]] = {}
    for index, group in zip(candidates, groups, strict=True):
        members.setdefault(group, []).append(index)
    for indexes in members.values():
        if len(indexes) < 2:
            continue
        # Keep the largest copy (ties: the first in path order); the others are its near-copies.
        keeper = max(indexes, key=lambda i: (verdicts[i].width * verdicts[i].height, -i))
        for index in indexes:
            if index != keeper:
                verdict = verdicts[index]
                verdict.reason, verdict.same_as = "near_duplicate", verdicts[keeper].file
                verdict.detail = (
                    f"a copy of {verdicts[keeper].file} ({verdicts[keeper].width}x{verdicts[keeper].height})"
                )


def _flag_off_topic(
    files: list[Path],
    verdicts: list[FileVerdict],
    settings: CleanSettings,
    features: FeatureFunction,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    classes: dict[str, dict[str, Any]] = {}
    scored: dict[str, tuple[list[int], np.ndarray]] = {}
    for name in dict.fromkeys(verdict.class_name for verdict in verdicts):
        indexes = [i for i, v in enumerate(verdicts) if v.class_name == name and not v.reason]
        info: dict[str, Any] = {"files": sum(1 for v in verdicts if v.class_name == name)}
        classes[name] = info
        if len(indexes) < settings.min_class_for_outliers:
            info["off_topic"] = f"{len(indexes)} candidates, fewer than {settings.min_class_for_outliers}"
            continue
        if progress:
            print(f"embedding {len(indexes)} images of {name}", file=sys.stderr)
        scored[name] = (indexes, np.asarray(features([files[i] for i in indexes])))  # [N, C]
    # One spread for the folder (`outliers.py`): each class's own would be estimated from ~25 values.
    all_scores = folder_off_topic_scores(
        [embedded for _, embedded in scored.values()], settings.outlier_mads, settings.neighbours
    )
    for (name, (indexes, _)), scores in zip(scored.items(), all_scores, strict=True):
        classes[name]["off_topic"] = {
            "median_similarity": scores.median,
            "threshold": scores.threshold,
            "folder_spread": scores.spread,
        }
        for position, index in enumerate(indexes):
            verdict = verdicts[index]
            verdict.similarity = round(float(scores.similarity[position]), 4)
            verdict.score = round(float(scores.score[position]), 3)
            if scores.flagged[position]:
                verdict.reason = "off_topic"
                verdict.detail = (
                    f"local similarity {verdict.similarity:.3f}, threshold {scores.threshold:.3f}"
                )
    return classes


def _read_decisions(root: Path, files: set[str]) -> list[tuple[str, str]]:
    """(action, file) pairs from `DIR/decisions.txt` (`keep FILE` / `reject FILE`, `#` comments)."""
    path = root / DECISIONS_NAME
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    decisions = []
    for number, line in enumerate(text.splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        action, _, file = text.partition(" ")
        file = file.strip()
        if action not in ("keep", "reject") or not file:
            raise UserError(
                f"{path}:{number}: expected 'keep CLASS/FILE' or 'reject CLASS/FILE', got {text!r}"
            )
        if file not in files:
            raise UserError(
                f"{path}:{number}: {file} is not in {root} (already moved?); fix or remove the line"
            )
        decisions.append((action, file))
    return decisions


def _apply_decisions(decisions: list[tuple[str, str]], verdicts: list[FileVerdict]) -> None:
    """A person's word over the cleaner's: `keep` accepts a flagged file, `reject` drops a kept one."""
    by_file = {verdict.file: verdict for verdict in verdicts}
    for action, file in decisions:
        verdict = by_file[file]
        if action == "keep":
            verdict.reason, verdict.detail = (
                "",
                f"kept by {DECISIONS_NAME} (was {verdict.reason or 'accepted'})",
            )
        elif verdict.accepted:
            verdict.reason, verdict.detail = "manual", f"rejected in {DECISIONS_NAME}"
        verdict.decided_by = DECISIONS_NAME


def _move_files(report: CleanReport) -> int:
    """Move each file to `_accepted/` or `_rejected/REASON/`; append every move to the moves list."""
    root = report.root
    moves_file = root / MOVES_NAME
    new = not moves_file.exists()
    moved = 0
    with open(moves_file, "a", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if new:
            writer.writerow(["from", "to", "reason"])
        for verdict in report.files:
            source = root / verdict.file
            if not source.is_file():
                continue
            folder = root / (ACCEPTED_DIR if verdict.accepted else f"{REJECTED_DIR}/{verdict.reason}")
            target = _free_name(folder / verdict.file)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)  # one folder tree: a rename, never a copy and delete
            writer.writerow([verdict.file, target.relative_to(root).as_posix(), verdict.reason or "accepted"])
            handle.flush()
            moved += 1
        os.fsync(handle.fileno())
    return moved


def _free_name(target: Path) -> Path:
    candidate, number = target, 1
    while candidate.exists():
        candidate = target.with_name(f"{target.stem}-{number}{target.suffix}")
        number += 1
    return candidate


class BackboneFeatures:
    """Pooled ImageNet features of `settings.backbone`, the network built on first use."""

    def __init__(self, settings: CleanSettings) -> None:
        self.settings = settings
        self._network: Any = None

    def __call__(self, paths: Sequence[Path]) -> np.ndarray:
        import torch

        from ewaste_vision.data.images import load_rgb
        from ewaste_vision.data.transforms import eval_transform
        from ewaste_vision.models.registry import create_backbone, get_backbone_spec

        spec = get_backbone_spec(self.settings.backbone)
        if self._network is None:
            self._network, source = create_backbone(self.settings.backbone, pretrained=True)
            if source == "untrained":
                log.warning("%s has no ImageNet weights here: off-topic scores will mean little", spec.name)
            self._network.eval()
        transform = eval_transform(spec.input_size, spec.mean, spec.std)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(paths), self.settings.batch_size):
                batch = torch.stack(
                    [transform(load_rgb(p)) for p in paths[start : start + self.settings.batch_size]]
                )
                feature_map = self._network(batch)  # [B, C, h, w]
                chunks.append(feature_map.float().mean(dim=(2, 3)).numpy())  # [B, C]
        return np.concatenate(chunks) if chunks else np.zeros((0, 1))
