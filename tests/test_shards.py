"""Jobs cut into shards: a job stopped part-way resumes from the shards it saved, scores each
missing shard once, and gives the rows an uninterrupted job gives; the Ray engine's GPU requests."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from ewaste_vision.engines import EngineSettings
from ewaste_vision.engines.shards import SHARD_IMAGES, ShardResult, run_in_shards
from ewaste_vision.errors import UserError


def _names(count: int) -> list[str]:
    return [f"board{index:03d}.png" for index in range(count)]


def _scorer(calls: list[int], stop_after: int | None = None):  # type: ignore[no-untyped-def]
    """Scores a shard as its paths' lengths; raises (a kill) once `stop_after` shards are done."""

    def score(shards: list[list[str]], todo: list[int]) -> Iterable[tuple[int, ShardResult]]:
        for index in todo:
            if stop_after is not None and len(calls) == stop_after:
                raise KeyboardInterrupt  # what a kill looks like from inside: the job ends here
            calls.append(index)
            yield index, {"images": [{"path": p, "size": len(p)} for p in shards[index]], "skipped": []}

    return score


def test_a_stopped_job_resumes_from_its_saved_shards(tmp_path: Path) -> None:
    model, parts, names = tmp_path / "model.pt", tmp_path / "parts", _names(3 * SHARD_IMAGES + 5)
    model.write_bytes(b"weights")
    whole, _ = run_in_shards(model, names, "boxes", None, _scorer([]))
    first: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        run_in_shards(model, names, "boxes", parts, _scorer(first, stop_after=2))
    assert sorted(p.name for p in parts.glob("shard-*.json")) == ["shard-000000.json", "shard-000001.json"]
    second: list[int] = []
    resumed, _ = run_in_shards(model, names, "boxes", parts, _scorer(second))
    assert second == [2, 3]  # only the shards the stopped job had not finished
    assert resumed == whole and [row["path"] for row in resumed] == names
    assert not parts.exists()  # removed once the job is whole


def test_parts_of_another_job_are_not_mixed_in(tmp_path: Path) -> None:
    model, parts = tmp_path / "model.pt", tmp_path / "parts"
    model.write_bytes(b"weights")
    with pytest.raises(KeyboardInterrupt):
        run_in_shards(model, _names(2 * SHARD_IMAGES), "boxes", parts, _scorer([], stop_after=1))
    calls: list[int] = []
    other = _names(2 * SHARD_IMAGES + 1)  # another lot: its first shard holds the same names
    rows, _ = run_in_shards(model, other, "boxes", parts, _scorer(calls))
    assert calls == [0, 1, 2] and [row["path"] for row in rows] == other


def test_a_stop_the_engine_expects_is_one_line_saying_how_to_resume(tmp_path: Path) -> None:
    model, parts = tmp_path / "model.pt", tmp_path / "parts"
    model.write_bytes(b"weights")

    def cluster_gone(shards: list[list[str]], todo: list[int]) -> Iterable[tuple[int, ShardResult]]:
        yield 0, {"images": [], "skipped": []}
        raise ConnectionError("lost the cluster")

    with pytest.raises(UserError, match=r"ConnectionError\) with 1 of 2 shards left; 1 are saved in .*again"):
        run_in_shards(model, _names(SHARD_IMAGES + 1), "boxes", parts, cluster_gone, stops=(ConnectionError,))


def test_gpu_requests_share_the_cluster_and_refuse_what_it_lacks() -> None:
    from ewaste_vision.engines.ray_engine import gpus_for_workers

    assert gpus_for_workers(None, cluster_gpus=0, workers=2) == 0
    assert gpus_for_workers(None, cluster_gpus=4, workers=2) == 1
    assert gpus_for_workers(None, cluster_gpus=1, workers=4) == 0.25
    assert gpus_for_workers(0.5, cluster_gpus=1, workers=2) == 0.5
    assert gpus_for_workers(0, cluster_gpus=0, workers=3) == 0
    with pytest.raises(UserError, match="ask for 2 GPUs and the Ray cluster has 1"):
        gpus_for_workers(1, cluster_gpus=1, workers=2)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"name": "spark"}, "unknown engine 'spark'"),
        ({"name": "ray", "workers": 0}, "--workers must be at least 1"),
        ({"name": "ray", "gpus_per_worker": -1}, "--gpus-per-worker must be 0 or more"),
    ],
)
def test_engine_settings_are_checked(settings: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        EngineSettings(**settings)  # type: ignore[arg-type]
