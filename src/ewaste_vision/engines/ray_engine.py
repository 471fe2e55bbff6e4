"""The Ray engine: a job's images scored by a pool of Ray workers with Ray Data's `map_batches`.

The driver cuts the ordered list of images into shards (32 images by default, `engines.shards`), and
Ray Data runs a callable class over them: each worker loads the run's model once (onto its GPU
when Ray gave it one) and scores whole shards with the local engine's own code, so the answers are
the local engine's. Results come back to the driver, which writes each finished shard atomically
into a parts folder. Ray restarts a worker that dies and retries its shard; a job that stops all
the same (the cluster went away) says how many shards are saved, and the same command run again
scores only the rest.

Ray is an optional dependency (`pip install -e ".[ray]"`); nothing here imports it before a job
asks for the Ray engine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ewaste_vision.engines import EngineSettings
from ewaste_vision.engines.outputs import BoxesOutput, Skipped, boxes_from_json, stack_probabilities
from ewaste_vision.engines.shards import ShardResult, run_in_shards, shard_result
from ewaste_vision.errors import UserError

MAX_REMOTE_FILE_BYTES = 200_000_000
"""Largest remote file copied to a worker; a bigger one is skipped like an unreadable image."""

TEST_HOOK_VARIABLES = ("EWASTE_RAY_PID_DIR", "EWASTE_RAY_SHARD_DELAY_S")
"""Environment variables passed on to the workers for the fault tests: a folder where each worker
writes its process id, and a pause per shard so that a test can kill a worker mid-job."""


def is_uri(path: str | Path) -> bool:
    """Whether `path` names a remote file system (`s3://`, `gs://`, ...) rather than a local path."""
    return "://" in str(path) and not str(path).startswith("file://")


def list_uri_images(uri: str) -> list[str]:
    """Image files under a pyarrow file-system URI (a folder, searched recursively, or one file),
    sorted."""
    from pyarrow import fs as pafs

    from ewaste_vision.data.images import IMAGE_EXTENSIONS

    try:
        filesystem, root = pafs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(root)
        if info.type == pafs.FileType.File:
            return [uri]
        entries = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    except (OSError, ValueError) as exc:
        raise UserError(f"{uri}: cannot list it ({exc}); check the URI and the credentials") from exc
    scheme = uri.split("://", 1)[0]
    found = sorted(
        f"{scheme}://{entry.path}"
        for entry in entries
        if entry.type == pafs.FileType.File and Path(entry.path).suffix.lower() in IMAGE_EXTENSIONS
    )
    if not found:
        raise UserError(f"no image files found in {uri}")
    return found


def _fetch(uri: str, folder: Path) -> Path:
    """A copy of a remote file in `folder`, under the same suffix (decoders look at the bytes).

    Raises:
        OSError: the file cannot be read, or holds more than `MAX_REMOTE_FILE_BYTES`.
        ValueError: pyarrow cannot make sense of the URI.
    """
    from pyarrow import fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(uri)
    digest = hashlib.sha1(uri.encode()).hexdigest()[:16]
    local = folder / f"{digest}{Path(path).suffix}"
    with filesystem.open_input_file(path) as source:
        data = source.read(MAX_REMOTE_FILE_BYTES + 1)  # bounded: never a whole huge object in memory
    if len(data) > MAX_REMOTE_FILE_BYTES:
        raise OSError(f"over {MAX_REMOTE_FILE_BYTES} bytes")
    local.write_bytes(data)
    return local


class ShardScorer:
    """Ray Data's callable class: one model per worker, whole shards per call."""

    def __init__(self, model: str, kind: str, job_images: int = 0) -> None:
        import torch

        from ewaste_vision.engines.opening import open_model

        torch.set_num_threads(max(1, int(_assigned("CPU"))))
        pid_dir = os.environ.get("EWASTE_RAY_PID_DIR")
        if pid_dir:
            Path(pid_dir).mkdir(parents=True, exist_ok=True)
            (Path(pid_dir) / f"{os.getpid()}.pid").write_text(str(os.getpid()))
        self.kind = kind
        self.job_images = job_images
        # Ray sets CUDA_VISIBLE_DEVICES to the GPUs it gave this worker, so "cuda" is one of them.
        self.device = "cuda" if _assigned("GPU") and torch.cuda.is_available() else "cpu"
        self.model = open_model(model, device=self.device)
        self.delay = float(os.environ.get("EWASTE_RAY_SHARD_DELAY_S") or 0)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [self.score(json.loads(str(paths))) for paths in batch["paths"]]
        return {"shard": batch["shard"], "result": np.array(results, dtype=object)}

    def score(self, paths: list[str]) -> str:
        """One shard's outputs as JSON: `images` (probabilities or boxes) and `skipped`."""
        if self.delay:
            time.sleep(self.delay)
        with tempfile.TemporaryDirectory(prefix="ewaste-ray-") as folder:
            # Remote files are copied to this worker first; results name them by their URI. One
            # that cannot be copied is skipped like an unreadable image, not retried as a shard.
            shown: dict[Path, str] = {}
            local_paths: list[Path] = []
            not_copied: list[list[str]] = []
            for name in paths:
                try:
                    local_path = _fetch(name, Path(folder)) if is_uri(name) else Path(name)
                except (OSError, ValueError) as exc:
                    not_copied.append([name, f"cannot copy it to the worker ({exc})"])
                    continue
                local_paths.append(local_path)
                shown[local_path] = name
            result = shard_result(self.model, self.kind, local_paths, shown, self.job_images)
        result["skipped"] = not_copied + result["skipped"]
        return json.dumps(result)


def _assigned(resource: str) -> float:
    """How much of `resource` (CPU, GPU) Ray gave this worker; outside a worker, 1 CPU and no GPU."""
    try:
        import ray

        return float(ray.get_runtime_context().get_assigned_resources().get(resource, 0))
    except Exception:  # outside a Ray worker there is nothing assigned
        return 1.0 if resource == "CPU" else 0.0


def gpus_for_workers(requested: float | None, cluster_gpus: float, workers: int) -> float:
    """GPUs each worker asks Ray for: `requested`, or (None) one each where the cluster has enough,
    a share of them where it has fewer GPUs than workers, and none on a cluster without GPUs.

    A request the cluster cannot meet would leave the job waiting for ever, so it is refused.
    """
    if requested is None:  # workers share the GPUs there are, at most one each
        return min(1.0, cluster_gpus / workers)
    if requested * workers > cluster_gpus:
        raise UserError(
            f"--workers {workers} with --gpus-per-worker {requested:g} ask for {requested * workers:g} "
            f"GPUs and the Ray cluster has {cluster_gpus:g}; use fewer workers, a fraction, or 0"
        )
    return requested


@dataclass
class RayEngine:
    """Score images on Ray.

    Attributes:
        model: a run directory or an exported `.onnx` file, readable from every worker.
        address: a Ray cluster's address (`ray://HOST:10001` or `HOST:6379`); None starts a Ray
            instance on this machine for the job.
        workers: model workers (each holds one copy of the model).
        parts: folder for finished shards, so a stopped job resumes; None keeps them in a
            temporary folder for the job alone.
        progress: show a progress bar of shards.
        gpus_per_worker: GPUs each worker asks for; None shares the cluster's GPUs among the
            workers, one at most each (see `gpus_for_workers`). ONNX files always run on the CPU.
    """

    model: Path
    address: str | None = None
    workers: int = 1
    parts: Path | None = None
    progress: bool = False
    gpus_per_worker: float | None = None

    @classmethod
    def from_settings(
        cls, settings: EngineSettings, model: Path | str, parts: Path | None, progress: bool = False
    ) -> RayEngine:
        """The engine `settings` describe (`--address`, `--workers`, `--gpus-per-worker`)."""
        return cls(Path(model), settings.address, settings.workers, parts, progress, settings.gpus_per_worker)

    def label_probabilities(
        self, paths: Sequence[str | Path], num_classes: int
    ) -> tuple[np.ndarray, list[Path], Skipped]:
        """As `engines.local.label_probabilities`, on Ray."""
        images, skipped = self._run(paths, "labels")
        probs = stack_probabilities([row["probs"] for row in images], num_classes)
        # Names stay strings: a URI's double slash would not survive a Path.
        return probs, [row["path"] for row in images], skipped

    def detect_files(self, paths: Sequence[str | Path]) -> tuple[list[BoxesOutput], Skipped]:
        """As `engines.local.detect_files`, on Ray."""
        images, skipped = self._run(paths, "boxes")
        return [boxes_from_json(row) for row in images], skipped

    def _run(self, paths: Sequence[str | Path], kind: str) -> tuple[list[dict[str, Any]], Skipped]:
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        ray = ray_module()

        def score(shards: list[list[str]], todo: list[int]) -> Iterable[tuple[int, ShardResult]]:
            return self._score_on_ray(shards, todo, kind)

        return run_in_shards(
            self.model, paths, kind, self.parts, score, stops=(ray.exceptions.RayError, RuntimeError)
        )

    def _score_on_ray(
        self, shards: list[list[str]], todo: list[int], kind: str
    ) -> Iterable[tuple[int, ShardResult]]:
        ray = start_ray(self.address)
        gpus = gpus_for_workers(self.gpus_per_worker, ray.cluster_resources().get("GPU", 0), self.workers)
        items = [{"shard": index, "paths": json.dumps(shards[index])} for index in todo]
        job_images = sum(len(shard) for shard in shards)
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        scored = dataset.map_batches(
            ShardScorer,
            # The job size decides compilation (as for the local engine), hence the exact numbers.
            fn_constructor_kwargs={"model": str(self.model), "kind": kind, "job_images": job_images},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=self.workers),
            num_cpus=1,
            num_gpus=gpus,
        )
        rows: Any = scored.iter_rows()
        if self.progress:
            from tqdm import tqdm

            rows = tqdm(rows, total=len(todo), unit="shard")
        for row in rows:
            yield int(row["shard"]), json.loads(str(row["result"]))


def ray_module() -> Any:
    """The `ray` package, or a one-line `UserError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise UserError('--engine ray needs Ray: pip install -e ".[ray]"') from exc
    return ray


def start_ray(address: str | None) -> Any:
    """Ray, connected to `address` or to a new instance on this machine; started once a process."""
    ray = ray_module()
    if not ray.is_initialized():
        env = {name: os.environ[name] for name in TEST_HOOK_VARIABLES if name in os.environ}
        try:
            ray.init(
                # "local" always starts a fresh instance; None would join any cluster left running.
                address=address or "local",
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"env_vars": env} if env else None,
            )
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"reach the Ray cluster at {address}" if address else "start Ray on this machine"
            raise UserError(f"cannot {where}: {exc}") from exc
        ray.data.DataContext.get_current().enable_progress_bars = False
        # Ray Data logs every execution plan at INFO; the job's own progress bar says enough.
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray
