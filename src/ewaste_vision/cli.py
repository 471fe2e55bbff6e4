"""The `ewaste` command: a thin layer over the Python API.

`ewaste train` options are generated from `TrainConfig`, so the CLI, YAML recipes and the API
cannot drift apart. User errors print one line and exit 2; nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ewaste_vision.errors import UserError

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ewaste` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; a training run continues with `ewaste train --out RUN --resume`", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ewaste", description="See into electronic waste.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    models = commands.add_parser("models", help="list the backbones")
    models.set_defaults(handler=_cmd_models)

    train = commands.add_parser("train", help="train a model on a dataset folder into a run directory")
    train.add_argument("data", help="dataset folder")
    train.add_argument("--config", type=Path, help="YAML file of settings (flags given here win)")
    _add_config_options(train)
    train.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="score a run on its test split or on other data")
    evaluate.add_argument("run", type=Path, help="run directory")
    evaluate.add_argument("--data", type=Path, help="evaluate on this dataset instead of the run's own split")
    evaluate.add_argument("--split", default="test", help="train, val, test or all (default test)")
    _add_engine_options(evaluate)
    evaluate.set_defaults(handler=_cmd_evaluate)

    predict = commands.add_parser("predict", help="top-k classes or boxes for image files and folders")
    predict.add_argument("run", type=Path, help="run directory, or a .onnx file from `ewaste export`")
    predict.add_argument(
        "paths", nargs="+", help="images or folders of images (with --engine ray also s3:// or gs:// URIs)"
    )
    predict.add_argument("--out", type=Path, help="write results to FILE.csv or FILE.json")
    predict.add_argument("--top-k", type=int, default=3, help="classes per image (default 3)")
    predict.add_argument(
        "--min-score", type=float, help="detect: boxes scoring above this (default 0.5, 001's rule)"
    )
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument(
        "--xray", nargs="+", help="fuse runs: X-ray images or folders, paired with PATHS by file stem"
    )
    _add_engine_options(predict)
    predict.set_defaults(handler=_cmd_predict)

    export = commands.add_parser("export", help="write a run's model for other runtimes (ONNX)")
    export.add_argument("run", type=Path, help="run directory")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="file format (default onnx)")
    export.add_argument("--out", type=Path, help="file to write (default RUN/model.onnx)")
    export.set_defaults(handler=_cmd_export)

    explain = commands.add_parser("explain", help="class heatmaps (Grad-CAM and friends) for images")
    explain.add_argument("run", type=Path, help="run directory")
    explain.add_argument("paths", nargs="+", type=Path, help="images or folders of images")
    explain.add_argument("--out", type=Path, required=True, help="folder for the heatmaps")
    explain.add_argument(
        "--classes", default="top2", help="top2 (default), all, or comma-separated class names"
    )
    explain.add_argument("--method", default="gradcam", help="CAM method (see `ewaste explain --help`)")
    explain.add_argument(
        "--shared-scale", action="store_true", help="one colour scale for all classes of an image"
    )
    explain.add_argument("--target-layer", help="module name of the feature map to explain")
    explain.set_defaults(handler=_cmd_explain)

    value = commands.add_parser("value", help="detect components on boards and estimate their value")
    value.add_argument("run", type=Path, help="run directory of a detect run")
    value.add_argument("paths", nargs="+", type=Path, help="board images or folders of them (a lot)")
    value.add_argument("--out", type=Path, required=True, help="folder for the lot CSV and report")
    value.add_argument("--prices", type=Path, help="price table YAML (default: 001's figures, shipped)")
    value.add_argument(
        "--size-scaling",
        action="store_true",
        help="scale a component's content with its box area relative to its class mean",
    )
    _add_engine_options(value)
    value.set_defaults(handler=_cmd_value)

    transfer = commands.add_parser(
        "transfer", help="003's study: from scratch, from a source run and from ImageNet, on one target split"
    )
    transfer.add_argument("source", type=Path, help="finished run whose backbone the transfer rows start")
    transfer.add_argument("target", type=Path, help="target dataset folder (class folders)")
    transfer.add_argument("--out", type=Path, required=True, help="folder for the rows' runs and the report")
    transfer.add_argument(
        "--imagenet",
        nargs="*",
        default=["efficientnet_lite0", "resnet18", "inception_v3"],
        metavar="BACKBONE",
        help="ImageNet-initialised backbones to compare (default efficientnet_lite0 resnet18 inception_v3)",
    )
    transfer.add_argument("--max-epochs", type=int, default=30, help="epochs of rows that train the backbone")
    transfer.add_argument("--head-epochs", type=int, default=100, help="epochs of head-only (linear) rows")
    transfer.add_argument("--image-size", type=int, default=0, help="0: the source run's / each backbone's")
    transfer.add_argument("--lr-schedule", choices=("step", "onecycle"), default="step")
    transfer.add_argument(
        "--patience", type=int, default=20, help="epochs without a better validation loss before a row stops"
    )
    transfer.add_argument("--seed", type=int, default=0)
    transfer.set_defaults(handler=_cmd_transfer)

    demo = commands.add_parser("demo", help="the whole job on synthetic boards, offline, in minutes")
    demo.add_argument(
        "--out", type=Path, default=Path("ewaste-demo"), help="output folder (default ewaste-demo)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=_cmd_demo)

    serve = commands.add_parser("serve", help="web app and HTTP API over run directories of any task")
    serve.add_argument("runs", nargs="+", type=Path, help="run directories (classify, multilabel, detect)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)"
    )
    serve.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    login = serve.add_mutually_exclusive_group()
    login.add_argument("--auth", metavar="USER:PASSWORD", help="require this login (visible in `ps`)")
    login.add_argument(
        "--auth-file", type=Path, metavar="FILE", help="require a login from user:password lines"
    )
    serve.set_defaults(handler=_cmd_serve)

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(title="data commands", metavar="COMMAND")
    check = data_commands.add_parser("check", help="images per class, unreadable files, duplicates, leakage")
    check.add_argument("dir", type=Path)
    check.add_argument("--json", type=Path, help="also write the report as JSON")
    check.set_defaults(handler=_cmd_data_check)
    to_csv = data_commands.add_parser("yolo2multilabel", help="YOLO labels as multi-hot rows in a CSV")
    to_csv.add_argument("data", type=Path, help="YOLO dataset folder or its data.yaml")
    to_csv.add_argument("--out", type=Path, required=True, help="CSV file to write")
    to_csv.set_defaults(handler=_cmd_data_yolo2multilabel)
    resplit = data_commands.add_parser("split", help="new YOLO tree with copies of a photo kept in one split")
    resplit.add_argument("data", type=Path, help="YOLO dataset folder or its data.yaml")
    resplit.add_argument("--out", type=Path, required=True, help="new folder for the split dataset")
    resplit.add_argument("--seed", type=int, default=0)
    resplit.add_argument(
        "--fractions", type=float, nargs=3, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST")
    )
    resplit.set_defaults(handler=_cmd_data_split)
    synth = data_commands.add_parser("synth-pcb", help="draw synthetic circuit boards with YOLO labels")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("-n", type=int, default=200, help="number of boards (default 200)")
    synth.add_argument("--size", type=int, default=320, help="board image size in pixels (default 320)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=_cmd_data_synth)
    synth_ct = data_commands.add_parser(
        "synth-ct", help="procedural device CT volumes (NRRD) and RGB photos of their outside"
    )
    synth_ct.add_argument("--out", type=Path, required=True)
    synth_ct.add_argument("--classes", type=int, required=True, help="number of device classes (2 or more)")
    synth_ct.add_argument("--devices-per-class", type=int, default=3, help="devices per class (default 3)")
    synth_ct.add_argument("--size", type=int, default=96, help="voxels along a device's length (default 96)")
    synth_ct.add_argument("--photos-per-device", type=int, default=8, help="photos per device (default 8)")
    synth_ct.add_argument("--seed", type=int, default=0)
    synth_ct.set_defaults(handler=_cmd_data_synth_ct)
    synth_xray = data_commands.add_parser(
        "synth-xray", help="domain-randomised radiographs (DRRs) of CT volumes, as 16-bit class folders"
    )
    synth_xray.add_argument("volumes", type=Path, help="VOLUMES/CLASS/DEVICE.nrrd (as `synth-ct` writes)")
    synth_xray.add_argument("--out", type=Path, required=True, help="folder for CLASS/*.png and manifest")
    synth_xray.add_argument("-n", type=int, default=100, help="accepted renders per volume (default 100)")
    synth_xray.add_argument(
        "--config", type=Path, help="DR settings YAML (default: as configs/xray/dr_default.yaml)"
    )
    synth_xray.add_argument("--seed", type=int, default=0)
    synth_xray.add_argument(
        "--split-by-device", action="store_true", help="write train/val/test with whole devices per split"
    )
    synth_xray.add_argument("--device", help="torch device (default: cuda when there is one, else cpu)")
    synth_xray.set_defaults(handler=_cmd_data_synth_xray)
    crawl = data_commands.add_parser(
        "crawl", help="download class images from keyword searches and URL lists (QUERIES.yaml)"
    )
    crawl.add_argument("queries", type=Path, help="QUERIES.yaml: classes, keywords, max, urls")
    crawl.add_argument("--out", type=Path, required=True, help="folder for CLASS/NNNNNN.jpg and manifest.csv")
    crawl.set_defaults(handler=_cmd_data_crawl)
    clean = data_commands.add_parser(
        "clean", help="flag duplicates, broken, tiny and off-topic images for review; --apply moves them"
    )
    clean.add_argument("dir", type=Path, help="folder of class folders (e.g. from `ewaste data crawl`)")
    clean.add_argument("--backbone", default="efficientnet_lite0", help="embedding for off-topic images")
    clean.add_argument("--min-size", type=int, default=64, help="short side below this is tiny (default 64)")
    clean.add_argument(
        "--outlier-mads",
        type=float,
        default=1.75,
        help="off-topic: this many spreads (pooled over classes) below the class's median local "
        "similarity (default 1.75)",
    )
    clean.add_argument("--apply", action="store_true", help="move files to _accepted/ and _rejected/REASON/")
    clean.set_defaults(handler=_cmd_data_clean)
    return parser


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    from ewaste_vision.engines import ENGINES

    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help='where images are scored: local (default) or ray (pip install -e ".[ray]")',
    )
    parser.add_argument(
        "--address", help="--engine ray: the Ray cluster's address (default: start Ray on this machine)"
    )
    parser.add_argument("--workers", type=int, default=1, help="--engine ray: model workers (default 1)")
    parser.add_argument(
        "--gpus-per-worker",
        type=float,
        help="--engine ray: GPUs per worker (default: the cluster's GPUs shared, at most 1 each; 0: none)",
    )


def _engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from ewaste_vision.engines import EngineSettings

    return {"engine": EngineSettings(args.engine, args.address, args.workers, args.gpus_per_worker)}


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per `TrainConfig` field, defaults suppressed so YAML values are not overridden."""
    from ewaste_vision.config import TrainConfig, config_fields

    hints = typing.get_type_hints(TrainConfig)
    for field in config_fields():
        if field.name in ("data", "extra"):
            continue
        flag = "--" + field.name.replace("_", "-")
        doc = _field_doc(field.name)
        hint = hints[field.name]
        if hint in (bool, bool | None):
            parser.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=doc,
            )
        elif field.name == "split":
            parser.add_argument(
                flag,
                dest=field.name,
                type=float,
                nargs=3,
                default=argparse.SUPPRESS,
                metavar=("TRAIN", "VAL", "TEST"),
                help=doc,
            )
        else:
            kind = int if hint is int else float if hint is float else str
            parser.add_argument(flag, dest=field.name, type=kind, default=argparse.SUPPRESS, help=doc)


def _field_doc(name: str) -> str:
    # The attribute docstrings of TrainConfig are the help texts.
    import ast
    import inspect

    from ewaste_vision import config

    tree = ast.parse(inspect.getsource(config.TrainConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and getattr(node.target, "id", None) == name
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            return str(following.value.value)
    return ""


def _cmd_models(args: argparse.Namespace) -> int:
    from ewaste_vision.models.registry import available_backbones, get_backbone_spec

    for name in available_backbones():
        spec = get_backbone_spec(name)
        print(f"{name:20s} {spec.input_size:4d}px  {spec.summary}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ewaste_vision.config import TrainConfig, config_fields, load_config_file
    from ewaste_vision.training.trainer import saved_config, train

    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    if getattr(args, "resume", False):
        values = {**saved_config(Path(args.out if "out" in vars(args) else TrainConfig.out)), **values}
    for field in config_fields():
        if field.name in vars(args):
            values[field.name] = getattr(args, field.name)
    values["data"] = args.data
    if "split" in values:
        values["split"] = tuple(values["split"])
    try:
        config = TrainConfig(**values)
    except UserError as exc:
        if args.config is None:
            raise
        raise UserError(f"{args.config} (or a flag): {exc}") from exc
    result = train(config, progress=sys.stderr.isatty())
    if result is None:
        return 0
    from ewaste_vision.tasks import get_task

    print(get_task(result.metrics.get("task", values.get("task", "classify"))).headline(result.metrics))
    print(f"run directory: {result.run_dir}  (report: {result.report}, {result.seconds:.0f} s)")
    _print_report_skips(result.report)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ewaste_vision.runs import read_model_file, resolve_run_dir
    from ewaste_vision.tasks import get_task

    _, meta = read_model_file(resolve_run_dir(args.run) / "model.pt")
    if meta.task == "fuse":
        from ewaste_vision.fusion.evaluate import evaluate_fusion

        metrics, report = evaluate_fusion(
            args.run, data=args.data, split=args.split, progress=sys.stderr.isatty()
        )
        print(get_task(meta.task).headline(metrics))
        print(f"report: {report}")
        return 0
    if meta.task == "detect":
        from ewaste_vision.detect.evaluate import evaluate_detector

        if args.data is not None:
            raise UserError("--data is not supported for detect runs yet; evaluate on the run's own split")
        metrics, report = evaluate_detector(
            args.run, split=args.split, progress=sys.stderr.isatty(), **_engine_kwargs(args)
        )
    else:
        from ewaste_vision.evaluate import evaluate_run

        metrics, report = evaluate_run(
            args.run, data=args.data, split=args.split, progress=sys.stderr.isatty(), **_engine_kwargs(args)
        )
    print(get_task(meta.task).headline(metrics))
    print(f"report: {report}")
    _print_report_skips(report)
    return 0


def _print_report_skips(report: Path, listed: int = 10) -> None:
    """One stderr line per file a run's report says was skipped, so no bad file goes unmentioned."""
    from ewaste_vision.report.markdown import NOTE_KEYS

    lines = report.read_text(encoding="utf-8").splitlines() if report.is_file() else []
    heading = f"## {NOTE_KEYS['skipped']}"
    start = lines.index(heading) + 1 if heading in lines else len(lines)
    skipped = []
    for line in lines[start:]:
        if line.startswith("#"):
            break
        if line.startswith("- "):
            skipped.append(line[2:])
    for item in skipped[:listed]:
        print(f"skipped {item}", file=sys.stderr)
    if len(skipped) > listed:
        print(f"... and {len(skipped) - listed} more skipped files (listed in {report})", file=sys.stderr)


def _cmd_predict(args: argparse.Namespace) -> int:
    from ewaste_vision.fusion.predict import is_fusion_run
    from ewaste_vision.predict import predict_to_file

    if args.xray is not None or is_fusion_run(args.run):
        return _predict_pairs(args)
    rows, skipped = predict_to_file(
        args.run,
        args.paths,
        args.out,
        args.top_k,
        args.batch_size,
        progress=sys.stderr.isatty(),
        min_score=args.min_score,
        **_engine_kwargs(args),
    )
    if args.out is not None:
        print(f"wrote {len(rows)} predictions to {args.out}")
    for row in rows if args.out is None else []:
        if "top" in row:
            print(row["file"], " ".join(f"{c}={p:.3f}" for c, p in row["top"]))
        elif not row["detections"]:
            print(row["file"], "(no boxes above the minimum score)")
        for name, score, box in row.get("detections", []):
            print(row["file"], name, f"{score:.3f}", " ".join(f"{v:.1f}" for v in box))
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 0


def _predict_pairs(args: argparse.Namespace) -> int:
    """`ewaste predict FUSE_RUN RGB... --xray XRAY...`: one fused prediction per (RGB, X-ray) pair."""
    from ewaste_vision.fusion.predict import is_fusion_run, predict_pairs_to_file

    if not is_fusion_run(args.run):
        raise UserError(f"{args.run}: --xray is for fuse runs (ewaste train DATA --task fuse)")
    rows, skipped = predict_pairs_to_file(args.run, args.paths, args.xray or [], args.out, args.top_k)
    if args.out is not None:
        print(f"wrote {len(rows)} predictions to {args.out}")
    for row in rows if args.out is None else []:
        print(row["file"], "+", row["xray"], " ".join(f"{c}={p:.3f}" for c, p in row["top"]))
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ewaste_vision.export.onnx_export import export_onnx

    for written in export_onnx(args.run, args.out):
        print(f"wrote {written}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from ewaste_vision.explain.run import explain_paths

    written = explain_paths(
        args.run, args.paths, args.out, args.classes, args.method, args.shared_scale, args.target_layer
    )
    print(f"wrote heatmaps for {len(written.images)} images to {args.out} ({len(written)} files)")
    for path, reason in written.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 0


def _cmd_value(args: argparse.Namespace) -> int:
    from ewaste_vision.lot_value import value_lot

    result = value_lot(
        args.run, args.paths, args.out, args.prices, args.size_scaling, **_engine_kwargs(args)
    )
    total = sum(board.value for board in result.boards)
    currency = result.boards[0].currency if result.boards else ""
    interval = ""
    if result.uncertainty is not None:
        lot = result.uncertainty.lot
        interval = f" (corrected {lot.expected:.2f}, 90% interval {lot.low:.2f} to {lot.high:.2f})"
    print(f"{len(result.boards)} boards valued at {total:.2f} {currency}{interval}")
    print(f"report: {result.report}")
    for line in result.skipped:
        print(f"skipped {line}", file=sys.stderr)
    return 0


def _cmd_transfer(args: argparse.Namespace) -> int:
    from ewaste_vision.models.registry import get_backbone_spec
    from ewaste_vision.transfer.study import StudySettings, default_rows, row_title, run_transfer_study

    for name in args.imagenet:
        get_backbone_spec(name)  # an unknown name fails before anything trains
    if min(args.max_epochs, args.head_epochs, args.patience) < 1:
        raise UserError("--max-epochs, --head-epochs and --patience must be at least 1")
    settings = StudySettings(
        max_epochs=args.max_epochs,
        head_epochs=args.head_epochs,
        patience=args.patience,
        image_size=args.image_size,
        lr_schedule=args.lr_schedule,
        seed=args.seed,
    )
    results, report = run_transfer_study(
        args.source, args.target, args.out, default_rows(tuple(args.imagenet)), settings
    )
    for result in results:
        title = row_title(result.row, result.backbone)
        if result.skipped:
            print(f"{title}: not trained ({result.skipped})")
        else:
            low, high = result.accuracy_ci95
            print(f"{title}: {100 * (result.accuracy or 0):.1f}% (95% CI {100 * low:.1f}-{100 * high:.1f}%)")
    print(f"report: {report}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ewaste_vision.demo import run_demo

    run_demo(args.out, seed=args.seed, progress=sys.stderr.isatty())
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from ewaste_vision.app.server import serve
    except ImportError as exc:
        raise UserError(f"`ewaste serve` needs Gradio ({exc.name} is missing): pip install gradio") from exc

    serve(args.runs, host=args.host, port=args.port, auth=args.auth, auth_file=args.auth_file)
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from ewaste_vision.ct.check import check_volumes, format_volume_report, holds_volumes
    from ewaste_vision.data.check import check_dataset, format_report
    from ewaste_vision.io.atomic import write_json

    if holds_volumes(args.dir):
        volumes = check_volumes(args.dir)
        print(format_volume_report(volumes))
        if args.json:
            write_json(args.json, volumes.to_dict())
        return 0
    report = check_dataset(args.dir)
    print(format_report(report))
    if args.json:
        write_json(args.json, report.to_dict())
    return 0


def _cmd_data_yolo2multilabel(args: argparse.Namespace) -> int:
    from ewaste_vision.data.yolo import read_yolo, write_multilabel_csv

    dataset, summary = read_yolo(args.data)
    write_multilabel_csv(dataset, args.out)
    print(f"wrote {len(dataset.records)} images x {len(dataset.class_names)} classes to {args.out}")
    print(summary.describe())
    _print_skipped(dataset.skipped)
    return 0


def _cmd_data_split(args: argparse.Namespace) -> int:
    from ewaste_vision.data.leakage import find_copy_groups
    from ewaste_vision.data.yolo import read_yolo_dataset
    from ewaste_vision.data.yolo_split import describe_split, multilabel_grouped_split, write_split_dataset

    dataset = read_yolo_dataset(args.data)
    found = find_copy_groups([r.path for r in dataset.records], progress=sys.stderr.isatty())
    readable = [index for index, group in enumerate(found.together) if group >= 0]
    unreadable = [r.path for r, g in zip(dataset.records, found.together, strict=True) if g < 0]
    # Unreadable images first: they are listed before the (often many) label problems.
    dataset.skipped = [(path, f"{path}: cannot be read; left out") for path in unreadable] + dataset.skipped
    dataset.records = [dataset.records[index] for index in readable]
    # Uncertain pairs are kept together too: a leak costs more than a slightly uneven split.
    groups = [found.together[index] for index in readable]
    splits = multilabel_grouped_split(
        [r.present for r in dataset.records], groups, len(dataset.class_names), args.fractions, args.seed
    )
    yaml_file = write_split_dataset(dataset, splits, args.out)
    print(f"wrote {yaml_file}: {describe_split(splits, args.fractions)}")
    copies = [found.copies[index] for index in readable]
    kept = len(copies) - len(set(copies))
    look_alikes = len(set(copies)) - len(set(groups))
    print(f"{kept} copies kept with their source photo; {look_alikes} uncertain look-alikes kept together")
    _print_skipped(dataset.skipped)
    return 0


def _print_skipped(skipped: list[tuple[Path, str]], listed: int = 10) -> None:
    for _, reason in skipped[:listed]:
        print(f"skipped {reason}", file=sys.stderr)
    if len(skipped) > listed:
        print(f"... and {len(skipped) - listed} more skipped", file=sys.stderr)


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from ewaste_vision.data.synth import write_synthetic_boards

    if args.n < 1:
        raise UserError(f"-n must be at least 1, got {args.n}")
    root = write_synthetic_boards(args.out, args.n, seed=args.seed, size=args.size)
    print(f"wrote {args.n} synthetic boards with YOLO labels to {root}")
    return 0


def _cmd_data_synth_ct(args: argparse.Namespace) -> int:
    from ewaste_vision.ct.synth_ct import write_synthetic_ct

    result = write_synthetic_ct(
        args.out,
        args.classes,
        devices_per_class=args.devices_per_class,
        size=args.size,
        photos_per_device=args.photos_per_device,
        seed=args.seed,
    )
    print(
        f"wrote {len(result.volumes)} CT volumes to {result.root / 'volumes'} and "
        f"{len(result.photos)} photos to {result.root / 'rgb'} ({len(result.class_names)} classes)"
    )
    return 0


def _cmd_data_synth_xray(args: argparse.Namespace) -> int:
    from ewaste_vision.ct.render_job import synth_xray_folder

    summary, config = synth_xray_folder(
        args.volumes,
        args.out,
        args.n,
        args.config,
        seed=args.seed,
        split_by_device=args.split_by_device,
        device=args.device,
        progress=sys.stderr.isatty(),
    )
    lines = summary.describe(config.keypoints.min_count)
    print(lines[0])
    for line in lines[1:]:
        print(line, file=sys.stderr)
    _print_skipped(summary.skipped)
    return 0


def _cmd_data_crawl(args: argparse.Namespace) -> int:
    from ewaste_vision.collect.crawl import crawl

    summary = crawl(args.queries, args.out, progress=sys.stderr.isatty())
    print(summary.describe())
    return 0 if any(r.kept_before + r.kept_now for r in summary.classes) else 1


def _cmd_data_clean(args: argparse.Namespace) -> int:
    from ewaste_vision.collect.clean import CleanSettings, clean_folder

    settings = CleanSettings(backbone=args.backbone, min_size=args.min_size, outlier_mads=args.outlier_mads)
    report = clean_folder(args.dir, settings, apply=args.apply, progress=sys.stderr.isatty())
    print(report.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
