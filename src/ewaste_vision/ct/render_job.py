"""`ewaste data synth-xray`: domain-randomised radiographs of CT volumes, as a training folder.

Output, ready for `ewaste train OUT --task classify`:

    OUT/CLASS/DEVICE__a0003.png              16-bit grayscale renders (or OUT/{train,val,test}/CLASS/...
                                              with `split_by_device`: whole devices per split)
    OUT/manifest.jsonl                        one record per render attempt, accepted or rejected,
                                              with every setting it was drawn with
    OUT/dr_config.yaml                        the settings of the job (a resumed job must match)
    OUT/summary.json                          accepted and rejected renders per volume

Attempt k of a volume draws its settings and noise from a seed made of the job seed, the volume's
class and device and k alone, so a resumed or re-batched job writes the same images. Each image
is written atomically before its manifest line is appended; a re-run skips attempts that have a
record (and, if accepted, their file), and renders the rest.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from ewaste_vision.ct.drr import bounding_radius_mm
from ewaste_vision.ct.radiograph import Radiograph, fitted_pixel_mm, render_radiographs
from ewaste_vision.ct.randomise import DRConfig, RenderParams, render_seed, sample_render
from ewaste_vision.data.split import grouped_stratified_split
from ewaste_vision.errors import DataError, UserError
from ewaste_vision.io.atomic import atomic_path, write_json, write_yaml

MANIFEST = "manifest.jsonl"
CONFIG_FILE = "dr_config.yaml"
SUMMARY = "summary.json"
GIVE_UP_AFTER = 8
"""A volume none of whose first max(N, 8) attempts passed the keypoint filter is given up."""


class VolumeLike(Protocol):
    """What rendering needs of a CT volume (`ewaste_vision.ct.volume.Volume` has it)."""

    @property
    def voxels(self) -> np.ndarray: ...  # [D, H, W] float32 intensities
    @property
    def spacing(self) -> tuple[float, float, float]: ...  # mm along (D, H, W)


class EntryLike(Protocol):
    """One volume of a dataset: file, class and device (`ewaste_vision.ct.volume.VolumeEntry`)."""

    @property
    def path(self) -> Path: ...
    @property
    def class_name(self) -> str: ...
    @property
    def device(self) -> str: ...


@dataclass
class VolumeOutcome:
    """How the renders of one volume went."""

    path: str
    class_name: str
    device: str
    split: str | None
    accepted: int = 0
    rejected: int = 0
    best_rejected_keypoints: int = 0
    unreadable: str | None = None


@dataclass
class JobSummary:
    """What a synth-xray job did."""

    out: Path
    wanted_per_volume: int
    volumes: list[VolumeOutcome] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(v.accepted for v in self.volumes)

    @property
    def rejected(self) -> int:
        return sum(v.rejected for v in self.volumes)

    @property
    def all_rejected(self) -> list[VolumeOutcome]:
        """Volumes whose every render failed the keypoint filter."""
        return [v for v in self.volumes if v.accepted == 0 and v.unreadable is None]

    def describe(self, min_keypoints: int) -> list[str]:
        """Lines for the person who ran the job: totals, then every volume that gave nothing."""
        rendered = [v for v in self.volumes if v.unreadable is None]
        used = len(rendered) - len(self.all_rejected)
        lines = [
            f"wrote {self.accepted} renders of {used} volumes to {self.out} "
            f"({self.rejected} rejected by the keypoint filter; manifest {self.out / MANIFEST})"
        ]
        lines += [
            f"{v.path}: every render ({v.rejected}) rejected by the keypoint filter (best had "
            f"{v.best_rejected_keypoints} keypoints, {min_keypoints} needed); volume left out, check its "
            "intensities against the transfer-function seeds or lower keypoints.min_count"
            for v in self.all_rejected
        ]
        lines += [f"{v.unreadable}; volume skipped" for v in self.volumes if v.unreadable is not None]
        lines += [
            f"{v.path}: {v.accepted} of {self.wanted_per_volume} renders accepted ({v.rejected} rejected)"
            for v in rendered
            if 0 < v.accepted < self.wanted_per_volume
        ]
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "wanted_per_volume": self.wanted_per_volume,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "volumes": [vars(v) for v in self.volumes],
            "skipped": [{"path": str(p), "reason": r} for p, r in self.skipped],
        }


def device_splits(
    entries: Sequence[EntryLike], fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> dict[tuple[str, str], str]:
    """Split name per (class, device): every device of a class goes whole into one split.

    A class with three or more devices has one in each split; renders of one device never sit on
    both sides of a split.
    """
    keys = sorted({(e.class_name, e.device) for e in entries})
    classes = sorted({c for c, _ in keys})
    labels = [classes.index(c) for c, _ in keys]
    splits = grouped_stratified_split(labels, list(range(len(keys))), fractions, seed)
    return dict(zip(keys, splits, strict=True))


def synth_xray(
    entries: Sequence[EntryLike],
    out: Path,
    renders_per_volume: int,
    config: DRConfig,
    *,
    load: Callable[[Path], VolumeLike],
    seed: int = 0,
    split_of: Mapping[tuple[str, str], str] | None = None,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    progress: bool = True,
    skipped: Iterable[tuple[Path, str]] = (),
    config_source: str = "DR settings",
) -> JobSummary:
    """Render `renders_per_volume` accepted radiographs of every volume into `out`.

    Args:
        entries: the volumes, each with its class and device.
        out: output folder; a folder from an earlier run with the same settings is resumed.
        renders_per_volume: accepted renders wanted per volume.
        config: the randomisation settings.
        load: reads one volume file.
        seed: job seed.
        split_of: split name per (class, device); none writes plain class folders.
        batch_size: renders drawn and rendered per step (the output does not depend on it).
        device: torch device; by default CUDA when there is one, else the CPU.
        progress: show a progress bar.
        skipped: files already left out (unreadable volumes), carried into the summary.
        config_source: where `config` came from (its YAML file), for error messages.

    Returns:
        The summary, also written to `out/summary.json`.

    Raises:
        UserError: `out` holds renders made with other settings, a pose puts the source or the
            detector inside a volume, or no volume gave a single accepted render.
    """
    if renders_per_volume < 1:
        raise UserError(f"-n must be at least 1, got {renders_per_volume}")
    if not entries:
        raise UserError(
            "no CT volumes to render; pass the folder `ewaste data synth-ct` wrote (or CLASS/DEVICE.nrrd)"
        )
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    out = Path(out)
    try:
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as exc:
        raise UserError(f"--device {device}: not a torch device ({exc}); use cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU here; leave --device out to use the CPU")
    _claim_output(out, config, seed, renders_per_volume, split_of is not None)
    done = _read_manifest(out / MANIFEST)
    summary = JobSummary(out=out, wanted_per_volume=renders_per_volume, skipped=list(skipped))
    bar = tqdm(
        total=renders_per_volume * len(entries),
        desc="renders",
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
    )
    with open(out / MANIFEST, "a", encoding="utf-8") as manifest:
        for entry in sorted(entries, key=lambda e: (e.class_name, e.device, str(e.path))):
            split = split_of[(entry.class_name, entry.device)] if split_of is not None else None
            outcome = VolumeOutcome(str(entry.path), entry.class_name, entry.device, split)
            _render_volume(
                config_source,
                entry,
                outcome,
                out,
                renders_per_volume,
                config,
                load,
                seed,
                batch_size,
                device,
                done,
                manifest,
                bar,
            )
            bar.set_postfix(rejected=summary.rejected + outcome.rejected)
            summary.volumes.append(outcome)
    bar.close()
    write_json(out / SUMMARY, summary.to_dict())
    if summary.accepted == 0:
        if all(v.unreadable is not None for v in summary.volumes):
            raise UserError(f"none of the {len(summary.volumes)} volumes could be read; see {out / SUMMARY}")
        raise UserError(
            f"no render passed the keypoint filter (fewer than {config.keypoints.min_count} keypoints in all "
            f"{summary.rejected}); check the transfer-function seeds or lower keypoints.min_count"
        )
    return summary


def synth_xray_folder(
    volumes: Path,
    out: Path,
    renders_per_volume: int,
    config_path: Path | None = None,
    *,
    seed: int = 0,
    split_by_device: bool = False,
    batch_size: int = 4,
    device: str | None = None,
    progress: bool = True,
) -> tuple[JobSummary, DRConfig]:
    """`ewaste data synth-xray`: every volume under `volumes/CLASS/...` (or `volumes/volumes/...`,
    as `ewaste data synth-ct` writes it), rendered into `out`.

    Raises:
        UserError: as `synth_xray`, or when the DR YAML or the volume folder is unusable.
    """
    from ewaste_vision.ct.randomise import load_dr_config
    from ewaste_vision.ct.volume import find_volumes, read_volume

    config = load_dr_config(config_path)
    volumes = Path(volumes)
    if (volumes / "volumes").is_dir():
        volumes = volumes / "volumes"
    entries, skipped = find_volumes(volumes)
    split_of = device_splits(entries, seed=seed) if split_by_device else None
    summary = synth_xray(
        entries,
        out,
        renders_per_volume,
        config,
        load=read_volume,
        seed=seed,
        split_of=split_of,
        batch_size=batch_size,
        device=device,
        progress=progress,
        skipped=skipped,
        config_source=str(config_path) if config_path is not None else "built-in DR defaults",
    )
    return summary, config


def _render_volume(
    config_source: str,
    entry: EntryLike,
    outcome: VolumeOutcome,
    out: Path,
    wanted: int,
    config: DRConfig,
    load: Callable[[Path], VolumeLike],
    seed: int,
    batch_size: int,
    device: torch.device,
    done: Mapping[tuple[str, str, int], dict[str, Any]],
    manifest: Any,
    bar: Any,
) -> None:
    """Attempts in order until `wanted` are accepted or the attempts run out."""
    max_attempts = wanted * config.keypoints.max_attempts_per_render
    give_up_after = max(wanted, GIVE_UP_AFTER)
    voxels: torch.Tensor | None = None
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    attempt = 0

    def finished(index: int) -> dict[str, Any] | None:
        record = done.get((entry.class_name, entry.device, index))
        if record is None or (record["accepted"] and not (out / record["file"]).is_file()):
            return None
        return record

    while outcome.accepted < wanted and attempt < max_attempts:
        if attempt >= give_up_after and outcome.accepted == 0:
            break  # every one of the first attempts failed: more will not help
        record = finished(attempt)
        if record is not None:
            _count(outcome, record["accepted"], record["keypoints"], bar)
            attempt += 1
            continue
        if voxels is None:
            try:
                volume = load(entry.path)
            except DataError as exc:
                outcome.unreadable = str(exc)
                return
            spacing = (float(volume.spacing[0]), float(volume.spacing[1]), float(volume.spacing[2]))
            _check_fits(config, volume.voxels.shape, spacing, entry.path, config_source)
            voxels = torch.from_numpy(np.ascontiguousarray(volume.voxels, dtype=np.float32)).to(device)
        # The run of attempts from here on that still need rendering, up to a batch.
        batch = [attempt]
        while len(batch) < batch_size and batch[-1] + 1 < max_attempts and finished(batch[-1] + 1) is None:
            batch.append(batch[-1] + 1)
        seeds = [render_seed(seed, entry.class_name, entry.device, a) for a in batch]
        params = [sample_render(config, np.random.default_rng(s)) for s in seeds]
        radiographs = render_radiographs(voxels, spacing, params, config, seeds)
        # Results are taken in attempt order and the job stops at `wanted`, so the batch size
        # never changes what is written.
        for index, radiograph, setting, attempt_seed in zip(batch, radiographs, params, seeds, strict=True):
            if outcome.accepted >= wanted or (index >= give_up_after and outcome.accepted == 0):
                break
            accepted = radiograph.keypoints >= config.keypoints.min_count
            relative = _relative_path(outcome, index)
            if accepted:
                _write_png(out / relative, radiograph)
            pixel_mm = fitted_pixel_mm(config, tuple(voxels.shape), spacing)
            record = _record(
                entry, outcome, index, attempt_seed, setting, radiograph, accepted, relative, config
            )
            _append(manifest, {**record, "pixel_mm": round(pixel_mm, 6)})
            _count(outcome, accepted, radiograph.keypoints, bar)
            attempt = index + 1


def _count(outcome: VolumeOutcome, accepted: bool, keypoints: int, bar: Any) -> None:
    if accepted:
        outcome.accepted += 1
        bar.update(1)
    else:
        outcome.rejected += 1
        outcome.best_rejected_keypoints = max(outcome.best_rejected_keypoints, int(keypoints))


def _relative_path(outcome: VolumeOutcome, attempt: int) -> str:
    folder = Path(outcome.split) / outcome.class_name if outcome.split else Path(outcome.class_name)
    return (folder / f"{outcome.device}__a{attempt:04d}.png").as_posix()


def _check_fits(
    config: DRConfig, shape: Sequence[int], spacing: Sequence[float], path: Path, config_source: str
) -> None:
    """A source or detector inside the volume's bounding sphere would cut through the object."""
    radius = bounding_radius_mm(shape, spacing)
    nearest_source = config.pose.source_to_isocentre_mm[0]
    if nearest_source <= radius:
        raise UserError(
            f"{config_source}: key 'pose.source_to_isocentre_mm' low {nearest_source} mm puts the "
            f"source inside {path} (its bounding radius is {radius:.0f} mm); "
            f"raise it above {math.ceil(radius)}"
        )
    nearest_detector = config.pose.source_to_detector_mm[0] - config.pose.source_to_isocentre_mm[1]
    if nearest_detector <= radius:
        raise UserError(
            f"{config_source}: key 'pose.source_to_detector_mm' puts the detector "
            f"{nearest_detector:.0f} mm behind the centre of {path}, inside it (bounding radius "
            f"{radius:.0f} mm); raise source_to_detector_mm"
        )


def _record(
    entry: EntryLike,
    outcome: VolumeOutcome,
    attempt: int,
    seed: int,
    setting: RenderParams,
    radiograph: Radiograph,
    accepted: bool,
    relative: str,
    config: DRConfig,
) -> dict[str, Any]:
    return {
        "volume": str(entry.path),
        "class": entry.class_name,
        "device": entry.device,
        "split": outcome.split,
        "attempt": attempt,
        "seed": seed,
        "accepted": accepted,
        "keypoints": radiograph.keypoints,
        "file": relative if accepted else None,
        "size": config.image.size,
        **setting.to_record(),
    }


def _write_png(path: Path, radiograph: Radiograph) -> None:
    ok, encoded = cv2.imencode(".png", radiograph.image)  # uint16 -> 16-bit grayscale PNG
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def _append(manifest: Any, record: dict[str, Any]) -> None:
    # One write per line, flushed and synced: a crash leaves at most a partial last line, which
    # the reader ignores.
    manifest.write(json.dumps(record) + "\n")
    manifest.flush()
    os.fsync(manifest.fileno())


def _read_manifest(path: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Complete records by (class, device, attempt); a torn last line is cut off the file."""
    records: dict[tuple[str, str, int], dict[str, Any]] = {}
    if not path.is_file():
        return records
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        # An interrupted append: drop the partial line so the next record starts a line of its own.
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            records[(record["class"], record["device"], int(record["attempt"]))] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return records


def _claim_output(out: Path, config: DRConfig, seed: int, wanted: int, split: bool) -> None:
    """Write the job's settings into `out`, or check they match those of the renders already there.

    A folder with no render recorded yet (a job stopped by a bad setting) takes the new settings.
    """
    settings = {
        "seed": seed,
        "split_by_device": split,
        "config_fingerprint": config.fingerprint(),
        "config": config.to_dict(),
    }
    existing = out / CONFIG_FILE
    manifest = out / MANIFEST
    started = manifest.is_file() and manifest.stat().st_size > 0
    if existing.is_file() and started:
        import yaml

        try:
            previous = yaml.safe_load(existing.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            previous = {}
        keys = ("seed", "split_by_device", "config_fingerprint")
        if any(previous.get(key) != settings[key] for key in keys):
            raise UserError(
                f"{existing}: {out} holds renders made with other settings (seed, config or "
                "--split-by-device); use a new --out, or the same settings to resume"
            )
        # More renders per volume extend the folder; fewer would leave the extra images in it.
        before = int(previous.get("renders_per_volume", 0))
        if wanted < before:
            raise UserError(
                f"{existing}: {out} already holds up to {before} renders per volume and -n {wanted} "
                f"would leave the rest in its class folders; use -n {before} or more, or a new --out"
            )
        if wanted == before:
            return
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(existing, {**settings, "renders_per_volume": wanted})
