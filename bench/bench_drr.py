"""DRR speed at 200 x 200: this toolkit's projector beside DiffDRR's, on the CPU, in one process.

Paths, called in turn on the same synthetic-CT device volume (`ct.synth_ct.device_volume`):

    ours_slices_b1        `line_integrals(method="slices")` (Joseph's method) on a ready
                          attenuation volume, one pose per call
    ours_slices_b8        the same, 8 poses per call (time per DRR)
    ours_rays_b1          `line_integrals(method="rays")`: ray marching, trilinear samples, as many
                          per ray as the volume's diagonal in voxels
    ours_rays_b8          the same, 8 poses per call
    ours_16bit_b1         `render_radiographs`: transfer function, projection, Beer-Lambert,
                          background, noise, keypoint count and 16-bit image, one per call
    ours_16bit_b8         the same, 8 per call (time per DRR): what `ewaste data synth-xray` runs
    diffdrr_siddon_b1     DiffDRR's exact Siddon path (`renderer="siddon"`), one pose per call
    diffdrr_trilinear_b1  DiffDRR's trilinear ray marching, one pose per call

DiffDRR is not a dependency; the bench looks for it on the path and leaves its rows out when it is
missing (install it somewhere apart: `pip install --target /tmp/diffdrr_site --no-deps diffdrr
fastcore einops torchio kornia kornia_rs roma nibabel Deprecated humanize jaxtyping wadler_lindig
loguru`, then `PYTHONPATH=/tmp/diffdrr_site`). Its published figure is 25 ms per 200 x 200 DRR on
an RTX 2080 Ti (Gopalakrishnan & Golland, 2022).

Run from the repository root:
    PYTHONPATH=/tmp/diffdrr_site python bench/bench_drr.py            # size 256 volume
    PYTHONPATH=/tmp/diffdrr_site python bench/bench_drr.py --size 96  # synth-ct's default size
    python bench/bench_drr.py --quick                                  # smoke run
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import numpy as np
import torch

from _common import RESULTS_DIR, describe, machine_facts, median, print_table, time_interleaved, write_json
from ewaste_vision.ct.drr import Detector, Pose, line_integrals
from ewaste_vision.ct.radiograph import fitted_pixel_mm, render_radiographs
from ewaste_vision.ct.randomise import DRConfig, render_seed, sample_render
from ewaste_vision.ct.synth_ct import device_volume
from ewaste_vision.ct.transfer import apply_transfer

IMAGE = 200
BATCH = 8


def diffdrr_paths(
    attenuation: np.ndarray, spacing: tuple[float, float, float], pose: Pose, pixel_mm: float
) -> dict[str, Callable[[], object]]:
    """DiffDRR renderers over the same volume and geometry, or nothing if it is not installed.

    DiffDRR is given our attenuation volume (0 to 0.6 per mm): its HU-to-density step reads that
    range as soft tissue and only rescales it, so both render the same field.
    """
    try:
        import torchio
        from diffdrr.data import read
        from diffdrr.drr import DRR
    except ImportError as exc:
        print(f"DiffDRR not found ({exc}); its rows are left out")
        return {}
    # torchio holds (channel, x, y, z); our [D, H, W] is (z, y, x).
    tensor = torch.from_numpy(np.ascontiguousarray(attenuation.transpose(2, 1, 0)))[None]
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    subject = read(torchio.ScalarImage(tensor=tensor, affine=affine), orientation="AP")
    rotations = torch.zeros(1, 3)
    translations = torch.tensor([[0.0, pose.source_to_isocentre_mm, 0.0]])
    paths: dict[str, Callable[[], object]] = {}
    for renderer in ("siddon", "trilinear"):
        drr = DRR(subject, sdd=pose.source_to_detector_mm, height=IMAGE, delx=pixel_mm, renderer=renderer)

        def call(drr: DRR = drr) -> torch.Tensor:
            with torch.no_grad():
                return drr(rotations, translations, parameterization="euler_angles", convention="ZXY")

        image = call()
        assert float(image.abs().sum()) > 0, f"DiffDRR {renderer} rendered an empty image"
        paths[f"diffdrr_{renderer}_b1"] = call
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="synthetic device length in voxels")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke run: size 64, 1 iteration")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the cores are shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.size, args.iterations = 64, 1

    volume = device_volume(0, 0, size=args.size)
    config = DRConfig()
    pixel_mm = fitted_pixel_mm(config, volume.voxels.shape, volume.spacing)
    seeds = [render_seed(0, "bench", k) for k in range(BATCH)]
    params = [sample_render(config, np.random.default_rng(s)) for s in seeds]
    voxels = torch.from_numpy(volume.voxels)
    attenuation = apply_transfer(voxels, params[0].transfer_points)
    detector = Detector(IMAGE, IMAGE, pixel_mm)
    poses = [p.pose for p in params]
    facts = machine_facts()
    facts["uptime"] = os.popen("uptime").read().strip()

    paths: dict[str, Callable[[], object]] = {
        "ours_slices_b1": lambda: line_integrals(attenuation, volume.spacing, poses[:1], detector, "slices"),
        "ours_slices_b8": lambda: line_integrals(attenuation, volume.spacing, poses, detector, "slices"),
        "ours_rays_b1": lambda: line_integrals(attenuation, volume.spacing, poses[:1], detector, "rays"),
        "ours_rays_b8": lambda: line_integrals(attenuation, volume.spacing, poses, detector, "rays"),
        "ours_16bit_b1": lambda: render_radiographs(voxels, volume.spacing, params[:1], config, seeds[:1]),
        "ours_16bit_b8": lambda: render_radiographs(voxels, volume.spacing, params, config, seeds),
    }
    paths.update(diffdrr_paths(attenuation.numpy(), volume.spacing, Pose(), pixel_mm))
    with torch.no_grad():
        seconds = time_interleaved(paths, iterations=args.iterations)

    rows = []
    for name, times in seconds.items():
        per_drr = median(times) / (BATCH if name.endswith("_b8") else 1)
        rows.append(
            {"path": name, "ms_per_drr": round(per_drr * 1000, 1), "drr_per_s": round(1 / per_drr, 2)}
        )
    base = next(r for r in rows if r["path"] == "ours_slices_b1")["ms_per_drr"]
    for row in rows:
        row["ratio_vs_ours_slices_b1"] = round(base / row["ms_per_drr"], 2)
    print(f"\n200 x 200 DRRs of a {'x'.join(map(str, volume.voxels.shape))} volume, CPU; {describe(facts)}")
    print(f"uptime at start: {facts['uptime']}")
    print_table(
        ["path", "ms per DRR", "DRRs per s", "speed vs ours_slices_b1"],
        [[r["path"], r["ms_per_drr"], r["drr_per_s"], r["ratio_vs_ours_slices_b1"]] for r in rows],
    )
    print("DiffDRR published: 25 ms per 200 x 200 DRR on an RTX 2080 Ti (GPU, not comparable to a CPU)")
    facts["uptime_end"] = os.popen("uptime").read().strip()
    write_json(
        RESULTS_DIR
        / ("drr_quick.json" if args.quick else "drr.json" if args.size == 256 else f"drr_{args.size}.json"),
        {"machine": facts, "volume_shape": list(volume.voxels.shape), "image": IMAGE, "rows": rows},
    )


if __name__ == "__main__":
    main()
