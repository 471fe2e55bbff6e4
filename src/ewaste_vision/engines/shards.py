"""A job cut into shards of images, each shard's result saved as it finishes, so a job that stops
(killed, or its cluster gone) resumes where it stopped. Both engines run their jobs this way when
they are given a folder for the parts."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ewaste_vision.engines.outputs import BoxesOutput, Skipped, boxes_from_json
from ewaste_vision.errors import UserError
from ewaste_vision.io.atomic import write_json

SHARD_IMAGES = 32
"""Images per shard: one model call's batch for classifiers, and the unit a resumed job skips."""

ShardResult = dict[str, Any]
"""`{"images": [...], "skipped": [[path, reason], ...]}`: one shard's outputs, as JSON."""

ScoreShards = Callable[[list[list[str]], list[int]], Iterable[tuple[int, ShardResult]]]
"""Scores the shards whose indices are given, yielding (index, result) as each one finishes."""


def shard_result(
    model: Any, kind: str, paths: Sequence[Path], shown: dict[Path, str], job_images: int
) -> ShardResult:
    """One shard's outputs: class probabilities (`kind="labels"`) or boxes (`"boxes"`) of the
    readable images, each named as `shown` says (a worker's copy of a remote file goes by its URI).

    `job_images` is the whole job's size, so a shard is compiled (or not) as the whole job would be.
    """
    from ewaste_vision.engines import local
    from ewaste_vision.engines.outputs import boxes_to_json

    if kind == "boxes":
        outputs, skipped = local.detect_files(model, paths)
        images = [{**boxes_to_json(o), "path": shown[o.path]} for o in outputs]
    else:
        probs, kept, skipped = local.label_probabilities(model, paths, job_images=job_images or None)
        images = [{"path": shown[p], "probs": row} for p, row in zip(kept, probs.tolist(), strict=True)]
    return {"images": images, "skipped": [[shown[p], why] for p, why in skipped]}


def score_in_this_process(model: Any, kind: str) -> ScoreShards:
    """Shards scored one after another by `model` (a `Predictor` or `Detector`) in this process."""

    def score(shards: list[list[str]], todo: list[int]) -> Iterable[tuple[int, ShardResult]]:
        job_images = sum(len(shard) for shard in shards)
        for index in todo:
            paths = [Path(name) for name in shards[index]]
            yield index, shard_result(model, kind, paths, {p: str(p) for p in paths}, job_images)

    return score


def detect_in_shards(
    detector: Any, model: Path, paths: Sequence[Path], parts: Path
) -> tuple[list[BoxesOutput], Skipped]:
    """As `engines.local.detect_files`, saving each finished shard in `parts`, so the same job run
    again after a kill scores only the shards it had not finished."""
    images, skipped = run_in_shards(model, paths, "boxes", parts, score_in_this_process(detector, "boxes"))
    return [boxes_from_json(row, Path(row["path"])) for row in images], skipped


def run_in_shards(
    model: Path,
    paths: Sequence[str | Path],
    kind: str,
    parts: Path | None,
    score: ScoreShards,
    stops: tuple[type[BaseException], ...] = (),
) -> tuple[list[dict[str, Any]], Skipped]:
    """Every image's output, in the order of `paths`, and the skipped files.

    Shards finished by an earlier run of the same job (same model file, kind and images) are read
    back from `parts` instead of scored again; the folder is removed once the job is whole. An
    exception of a type in `stops` (the engine's "the job cannot go on") becomes a one-line
    `UserError` saying how much is saved and that the same command resumes.
    """
    names = [str(p) for p in paths]
    shards = [names[i : i + SHARD_IMAGES] for i in range(0, len(names), SHARD_IMAGES)]
    with tempfile.TemporaryDirectory(prefix="ewaste-parts-") as scratch:
        store = PartStore(parts or Path(scratch), job_key(model, kind, shards))
        done = store.load()
        todo = [index for index in range(len(shards)) if index not in done]
        if done:
            logging.getLogger(__name__).warning(
                "resumed %d of %d shards from %s", len(done), len(shards), store.folder
            )
        try:
            for index, result in score(shards, todo) if todo else ():
                if index not in done:  # a retried shard may be delivered twice: keep one
                    done[index] = result
                    store.save(index, result)
        except stops as exc:
            missing = len(shards) - len(done)
            raise UserError(
                f"the job stopped ({type(exc).__name__}) with {missing} of {len(shards)} shards left; "
                f"{len(done)} are saved in {store.folder}: run the same command again to resume"
            ) from exc
        images: list[dict[str, Any]] = []
        skipped: Skipped = []
        for index in range(len(shards)):
            images.extend(done[index]["images"])
            skipped.extend((p, why) for p, why in done[index]["skipped"])
        store.remove()
    return images, skipped


class PartStore:
    """Finished shards of one job as JSON files in a folder, written atomically.

    A folder left by another job (another model, other images) is cleared rather than mixed in.
    """

    def __init__(self, folder: Path, key: str) -> None:
        self.folder = Path(folder)
        self.key = key

    def load(self) -> dict[int, ShardResult]:
        """The shards already finished by an earlier run of the same job."""
        job_file = self.folder / "job.json"
        if job_file.is_file():
            try:
                same_job = json.loads(job_file.read_text(encoding="utf-8")).get("key") == self.key
            except (OSError, ValueError):
                same_job = False
            if not same_job:
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(job_file, {"key": self.key})
        done: dict[int, ShardResult] = {}
        for part in sorted(self.folder.glob("shard-*.json")):
            try:
                done[int(part.stem.split("-")[1])] = json.loads(part.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                part.unlink()  # cannot be half-written (atomic), but never trust a damaged one
        return done

    def save(self, index: int, result: ShardResult) -> None:
        write_json(self.folder / f"shard-{index:06d}.json", result)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def job_key(model: Path, kind: str, shards: list[list[str]]) -> str:
    """What makes two runs the same job: the model file (by path and modification time), the kind
    of output and the images, shard by shard."""
    digest = hashlib.sha256()
    model_file = Path(model) / "model.pt" if Path(model).is_dir() else Path(model)
    stat = model_file.stat() if model_file.exists() else None
    digest.update(json.dumps([str(model), stat.st_mtime_ns if stat else 0, kind, shards]).encode())
    return digest.hexdigest()
