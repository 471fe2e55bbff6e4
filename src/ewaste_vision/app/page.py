"""The Gradio page: one tab per task among the served runs, each action also an API endpoint.

Every model call is a queued, batched event (`batch=True`): the queue merges waiting requests, so
throughput grows with concurrent users. The endpoints return JSON (and the drawn images and a CSV
as files); the page renders the same JSON into a status line and a table with a private follow-up
event, so what a person sees is what an API client gets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ewaste_vision.app.catalog import RunEntry, entries_of_task
from ewaste_vision.app.components import PRESENT, class_choices
from ewaste_vision.app.dispatch import Dispatcher
from ewaste_vision.app.jobs import Outcome
from ewaste_vision.app.summaries import SUMMARIES
from ewaste_vision.app.uploads import UPLOAD_EXTENSIONS
from ewaste_vision.value import PriceTable

MODEL_CONCURRENCY = "model"
"""Concurrency group of every model call: one batch at a time keeps memory bounded."""

CLASSIFY_API = """Class probabilities of images. Inputs: `model` (a classify model name from /models), \
`files` (images, or zips of images). Returns (result JSON, CSV file). Result: {"model", "task", \
"images": [{"file", "top": [{"class", "probability"}], "probabilities": {class: p}}], \
"skipped": [{"file", "reason"}]}, or with "error" when no image could be used."""

COMPONENTS_API = """Components present in board images with Grad-CAM heatmaps. Inputs: `model` (a \
multilabel model name), `files`, `classes` ("present", "all" or a class name: whose heatmaps to \
draw), `shared_scale` (one colour scale for all maps of an image). Returns (result JSON, heatmap \
images, CSV file). Result: {"model", "task", "shared_scale", "images": [{"file", "present": \
[{"class", "probability", "threshold"}], "probabilities", "heatmaps": [class]}], "skipped"}."""

BOARDS_API = """Components detected on boards, and each board's value. Inputs: `model` (a detect \
model name), `files` (photos, X-ray scans, or zips). Returns (result JSON, drawn boards, CSV file). \
Result: {"model", "task", "price_table": {"currency", "date"}, "images": [{"file", "width", \
"height", "tiled", "detections": [{"class", "score", "box": [x0, y0, x1, y1]}], "counts", "value": \
{"detected", "currency", "expected", "low", "high", "confidence"}}], "lot", "interval_note", \
"skipped"}."""

FUSION_API = """Class of a device from an RGB photo and an X-ray image of it (002's RGB-X fusion). \
Inputs: `model` (a fuse model name from /models), `rgb` (one image), `xray` (one image, 8 or 16 \
bit). Returns (result JSON, CSV file). Result: {"model", "task", "images": [{"file", "xray", \
"top": [{"class", "probability"}], "probabilities": {class: p}, "streams": {"rgb", "xray"}}], \
"skipped"}, or with "error"."""

MODELS_API = """The served models: {"models": [{"name", "task", "backbone", "image_size", \
"class_names", "modality"}], "limits": {...}, "price_table": {"currency", "date"}}."""


def build_page(dispatcher: Dispatcher, table: PriceTable, title: str = "ewaste-vision") -> gr.Blocks:
    """The page over `dispatcher`'s runs: a tab per task present, and the `/models` endpoint.

    Args:
        dispatcher: runs requests against the served runs.
        table: the price table (its date is shown on the detect tab).
        title: browser tab title.
    """
    catalog = dispatcher.catalog
    limits = dispatcher.limits
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(600, limits.result_ttl_s)) as page:
        gr.Markdown(
            f"# {title}\n{limits.describe()} Accepted files: {', '.join(UPLOAD_EXTENSIONS)}. "
            f"Results are kept for {limits.result_ttl_s // 60} minutes.",
            elem_id="intro",
        )
        with gr.Accordion("Served models", open=False, elem_id="models"):
            models_json = gr.JSON(label="Models, limits and price table", elem_id="models-json")
        if entries_of_task(catalog, "classify"):
            with gr.Tab("Classify", elem_id="tab-classify"):
                _classify_tab(dispatcher)
        if entries_of_task(catalog, "multilabel"):
            with gr.Tab("Components", elem_id="tab-multilabel"):
                _components_tab(dispatcher)
        if entries_of_task(catalog, "detect"):
            with gr.Tab("Detect and value", elem_id="tab-detect"):
                gr.Markdown(
                    f"Values use the price table of **{table.date}** ({table.currency}). Photos larger "
                    "than the detector's input are cut into tiles, so small parts are not lost.",
                    elem_id="detect-prices",
                )
                _boards_tab(dispatcher)
        if entries_of_task(catalog, "fuse"):
            with gr.Tab("RGB + X-ray", elem_id="tab-fuse"):
                _fusion_tab(dispatcher)

        def models() -> dict[str, Any]:
            return {
                "models": [entry.describe() for entry in catalog.values()],
                "limits": {
                    "max_file_bytes": limits.max_file_bytes,
                    "max_pixels": limits.max_pixels,
                    "max_files": limits.max_files,
                    "max_zip_members": limits.max_zip_members,
                },
                "price_table": {"currency": table.currency, "date": table.date},
            }

        page.load(models, None, models_json, api_name="models", api_description=MODELS_API)
    return page


def _model_picker(entries: list[RunEntry], task: str) -> gr.Dropdown:
    return gr.Dropdown(
        choices=[(entry.label(), entry.name) for entry in entries],
        value=entries[0].name,
        label="Model",
        # Checked per request by the dispatcher: Gradio's own check would fail the whole batch.
        allow_custom_value=True,
        elem_id=f"{task}-model",
    )


def _files_input(task: str) -> gr.File:
    # Files, never gr.Image: Gradio's image path would turn 16-bit scans into 8 bits. No
    # `file_types` either: Gradio would refuse a wrong type by failing every request batched with it;
    # `uploads` checks types per request instead.
    return gr.File(
        file_count="multiple",
        type="filepath",
        label="Images, X-ray scans or a zip of them",
        elem_id=f"{task}-files",
    )


@dataclass
class ResultArea:
    """The components a tab shows its results in."""

    status: gr.Markdown
    table: gr.Dataframe
    gallery: gr.Gallery | None
    result: gr.JSON
    csv: gr.File

    def endpoint_outputs(self) -> list[Any]:
        """What the endpoint returns, in order: result JSON, (images,) CSV."""
        return [self.result, *([self.gallery] if self.gallery is not None else []), self.csv]


def _results_area(task: str, gallery: bool) -> ResultArea:
    return ResultArea(
        status=gr.Markdown(elem_id=f"{task}-status"),
        table=gr.Dataframe(label="Results", interactive=False, elem_id=f"{task}-table"),
        gallery=gr.Gallery(label="Images", columns=3, elem_id=f"{task}-gallery") if gallery else None,
        result=gr.JSON(label="JSON result", elem_id=f"{task}-json"),
        csv=gr.File(label="Download CSV", interactive=False, elem_id=f"{task}-csv"),
    )


def _wire(
    button: gr.Button,
    handler: Callable[..., tuple[list[Any], ...]],
    inputs: list[Any],
    area: ResultArea,
    task: str,
    api_description: str,
    batch_size: int,
) -> None:
    """Run `handler` as the batched endpoint `/task`, then render its JSON into status and table."""
    event = button.click(
        handler,
        inputs,
        area.endpoint_outputs(),
        api_name=task,
        api_description=api_description,
        batch=True,
        max_batch_size=batch_size,
        concurrency_id=MODEL_CONCURRENCY,
        concurrency_limit=1,
    )
    summarise = SUMMARIES[task]

    def render(value: dict[str, Any] | None) -> tuple[str, Any]:
        text, header, rows = summarise(value)
        return text, gr.Dataframe(value=rows or None, headers=header or None)

    event.then(render, area.result, [area.status, area.table], api_visibility="private", queue=False)


def _outputs(outcomes: list[Outcome], gallery: bool) -> tuple[list[Any], ...]:
    results = [outcome.result for outcome in outcomes]
    tables = [str(outcome.table) if outcome.table else None for outcome in outcomes]
    if not gallery:
        return results, tables
    images = [[(str(path), caption) for path, caption in outcome.images] for outcome in outcomes]
    return results, images, tables


def _classify_tab(dispatcher: Dispatcher) -> None:
    entries = entries_of_task(dispatcher.catalog, "classify")
    model = _model_picker(entries, "classify")
    files = _files_input("classify")
    button = gr.Button("Classify", variant="primary", elem_id="classify-run")
    area = _results_area("classify", gallery=False)

    def classify(model: list[str], files: list[list[str] | None]) -> tuple[list[Any], ...]:
        return _outputs(dispatcher.run("classify", model, files), gallery=False)

    _wire(button, classify, [model, files], area, "classify", CLASSIFY_API, dispatcher.limits.max_batch_size)


def _components_tab(dispatcher: Dispatcher) -> None:
    entries = entries_of_task(dispatcher.catalog, "multilabel")
    model = _model_picker(entries, "multilabel")
    files = _files_input("multilabel")
    with gr.Row():
        classes = gr.Dropdown(
            choices=class_choices(entries[0].meta.class_names),
            value=PRESENT,
            label="Heatmaps of",
            allow_custom_value=True,  # checked per request by `components_jobs`
            elem_id="multilabel-classes",
        )
        shared = gr.Checkbox(label="One colour scale for all classes", elem_id="multilabel-shared-scale")
    button = gr.Button("Find components", variant="primary", elem_id="multilabel-run")
    area = _results_area("multilabel", gallery=True)
    catalog = dispatcher.catalog

    def picker_for(name: str) -> gr.Dropdown:
        return gr.Dropdown(choices=class_choices(catalog[name].meta.class_names), value=PRESENT)

    model.change(picker_for, model, classes, api_visibility="private", queue=False)

    def multilabel(
        model: list[str], files: list[list[str] | None], classes: list[str], shared_scale: list[bool]
    ) -> tuple[list[Any], ...]:
        options = [{"classes": c, "shared_scale": s} for c, s in zip(classes, shared_scale, strict=True)]
        return _outputs(dispatcher.run("multilabel", model, files, options), gallery=True)

    _wire(
        button,
        multilabel,
        [model, files, classes, shared],
        area,
        "multilabel",
        COMPONENTS_API,
        dispatcher.limits.max_batch_size,
    )


def _boards_tab(dispatcher: Dispatcher) -> None:
    entries = entries_of_task(dispatcher.catalog, "detect")
    model = _model_picker(entries, "detect")
    files = _files_input("detect")
    button = gr.Button("Detect and value", variant="primary", elem_id="detect-run")
    area = _results_area("detect", gallery=True)

    def detect(model: list[str], files: list[list[str] | None]) -> tuple[list[Any], ...]:
        return _outputs(dispatcher.run("detect", model, files), gallery=True)

    _wire(button, detect, [model, files], area, "detect", BOARDS_API, dispatcher.limits.max_batch_size)


def _fusion_tab(dispatcher: Dispatcher) -> None:
    entries = entries_of_task(dispatcher.catalog, "fuse")
    model = _model_picker(entries, "fuse")
    with gr.Row():
        rgb = gr.File(file_count="single", type="filepath", label="RGB photo", elem_id="fuse-rgb")
        xray = gr.File(file_count="single", type="filepath", label="X-ray image", elem_id="fuse-xray")
    button = gr.Button("Classify the pair", variant="primary", elem_id="fuse-run")
    area = _results_area("fuse", gallery=False)

    def fuse(model: list[str], rgb: list[str | None], xray: list[str | None]) -> tuple[list[Any], ...]:
        # A request's files: its RGB photo, then its X-ray image (`app.pairs.fusion_jobs`).
        files = [[path for path in pair if path] for pair in zip(rgb, xray, strict=True)]
        return _outputs(dispatcher.run("fuse", model, files), gallery=False)

    _wire(button, fuse, [model, rgb, xray], area, "fuse", FUSION_API, dispatcher.limits.max_batch_size)
