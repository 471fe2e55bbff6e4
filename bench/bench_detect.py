"""Detection speed: the toolkit's `Detector` against the same model in plain fp32 eager mode.

001's conveyor runs at 0.45 m/s under a 0.4 mm line detector, so a 640-pixel frame covers 256 mm
and arrives every 0.57 s: 1.76 frames/s. The target, 4 images/s for a 640x640 image on 2 CPU cores,
is twice that rate with room to spare. Both paths run on the same images, called in turn:

    plain_fp32   the detector in eval mode, fp32, `torch.no_grad`, one image per call
    product      `Detector.detect` as `ewaste value` and the app run it: bf16 autocast where the
                 CPU supports it, one image per call, at each of the run's input sizes (see
                 `detect.scales`), then its box classifier if it has one

With a box classifier the plain path runs it too, in fp32 (`Detector.detect` at precision 32).
The model is a trained run when `--run RUN` is given (the post-processing cost depends on how many
boxes clear the score floor, which an untrained network inflates), else the default detector with
ImageNet backbone weights and an untrained head. `--images DIR` times real photos (each call takes
the next of up to 12, resized to the frame), which a box classifier needs: its cost grows with the
boxes it is shown, and textured noise shows it almost none.

Run from the repository root:
    python bench/bench_detect.py [--run RUN] [--images DIR]    # about a minute on 2 cores
    python bench/bench_detect.py --quick
    python bench/bench_detect.py --run RUN --images DIR --sizes 448,640    # other input sizes than the run's
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
from torchvision.transforms import v2

from _common import RESULTS_DIR, describe, machine_facts, median, print_table, time_interleaved, write_json
from ewaste_vision.data.images import expand_image_paths
from ewaste_vision.detect.model import build_detector
from ewaste_vision.detect.predictor import Detector
from ewaste_vision.hardware import configure_threads
from ewaste_vision.models.registry import get_backbone_spec
from ewaste_vision.runs import ModelMeta

TARGET_IMAGES_PER_S = 4.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, help="a trained detect run (default: untrained head)")
    parser.add_argument("--frame", type=int, default=640, help="input frame side in pixels (default 640)")
    parser.add_argument("--images", type=Path, help="photos to time (default: textured noise)")
    parser.add_argument(
        "--sizes", help="input sizes to detect at, comma-separated, instead of the run's (e.g. 448,640)"
    )
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="3 iterations")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "detect.json")
    args = parser.parse_args()
    if args.sizes and not args.run:
        parser.error("--sizes needs --run RUN: only a trained run's sizes can be replaced")
    configure_threads()
    torch.manual_seed(0)
    facts_before = machine_facts()

    if args.run:
        product = Detector.from_run(args.run)
        plain = Detector.from_run(args.run, precision="32")
        source = str(args.run)
        if args.sizes:
            sizes = [int(size) for size in args.sizes.split(",")]
            product, plain = product.at_sizes(sizes), plain.at_sizes(sizes)
            source += f" at {args.sizes} px"
    else:
        model, _ = build_detector("efficientnet_lite0", 16, "n", 448)
        spec = get_backbone_spec("efficientnet_lite0")
        meta = ModelMeta(
            "detect", [str(i) for i in range(16)], "efficientnet_lite0", 448, spec.mean, spec.std
        )
        product = Detector(model, meta)
        plain = Detector(model, meta, precision="32")
        source = "efficientnet_lite0, size n, 448 px, untrained head"
    if args.images:
        side = [args.frame, args.frame]
        frames = [
            v2.functional.resize(product.load(path), side, antialias=True)
            for path in expand_image_paths([args.images])[:12]
        ]
        source += f"; {len(frames)} photos from {args.images}"
    else:
        # Textured frames rather than noise: real boards give the head a few confident spots,
        # noise gives it none or thousands.
        side = args.frame // 8
        frames = [torch.rand(3, side, side).repeat_interleave(8, 1).repeat_interleave(8, 2)]
    plain_frames, product_frames = itertools.cycle(frames), itertools.cycle(frames)

    iterations = 3 if args.quick else args.iterations
    seconds = time_interleaved(
        {
            "plain_fp32": lambda: plain.detect([next(plain_frames)]),
            "product": lambda: product.detect([next(product_frames)]),
        },
        iterations,
        warmup=2,
    )
    plain_rate = 1.0 / median(seconds["plain_fp32"])
    rows = []
    for path, values in seconds.items():
        rate = 1.0 / median(values)
        rows.append(
            {
                "path": path,
                "images_per_s": round(rate, 2),
                "ratio_vs_plain": round(rate / plain_rate, 2),
                "meets_4_per_s": rate >= TARGET_IMAGES_PER_S if path == "product" else None,
                "seconds": values,
            }
        )
    print(f"{args.frame}x{args.frame} frames, model: {source}; {describe(facts_before)}")
    print_table(
        ["path", "images/s", "x plain", "target 4 images/s"],
        [
            [
                r["path"],
                r["images_per_s"],
                r["ratio_vs_plain"],
                {True: "met", False: "MISSED", None: ""}[r["meets_4_per_s"]],
            ]
            for r in rows
        ],
    )
    write_json(
        args.json,
        {"machine_before": facts_before, "machine_after": machine_facts(), "model": source, "rows": rows},
    )


if __name__ == "__main__":
    main()
