"""Running a trained model on images: batched, bf16 where the hardware has it, channels-last."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ewaste_vision.data.datasets import ImageFileDataset
from ewaste_vision.data.images import expand_image_paths as expand_image_paths  # re-exported: torch-free
from ewaste_vision.data.transforms import eval_transform
from ewaste_vision.errors import UnreadableImageError, UserError
from ewaste_vision.hardware import COMPILE_MIN_IMAGES, CompiledForward, autocast, use_bf16
from ewaste_vision.models.classifier import ImageClassifier
from ewaste_vision.runs import ModelMeta, read_model_file, require_task, resolve_run_dir
from ewaste_vision.tasks import LabelTask, available_tasks, get_label_task, get_task


class Predictor:
    """A trained classifier ready for inference."""

    def __init__(
        self,
        model: ImageClassifier,
        meta: ModelMeta,
        precision: str = "auto",
        compile: str = "auto",
        batch_size: int = 32,
        device: str = "cpu",
    ) -> None:
        """Args:
        model: the network; it is put in eval mode and channels-last memory format.
        meta: what the network expects and predicts.
        precision: `auto` (bf16 where native), `bf16` or `32`.
        compile: `auto` (compile for large jobs), `always` or `never`; see `CompiledForward`.
        batch_size: images per forward pass.
        device: where the network runs (`cpu`, `cuda`, `cuda:1`); probabilities come back on the CPU.
        """
        if compile not in ("auto", "always", "never"):
            raise UserError(f"unknown compile setting {compile!r}; choose auto, always or never")
        self.device = device
        self.model = model.eval().to(device).to(memory_format=torch.channels_last)
        self.meta = meta
        self.task = get_label_task(meta.task)
        self.bf16 = use_bf16(precision, device)
        self.transform = eval_transform(meta.image_size, meta.mean, meta.std)
        self.compile = compile
        self.batch_size = batch_size
        self._compiled: CompiledForward | None = None

    def _forward(self, images: torch.Tensor, expected_images: int) -> torch.Tensor:
        wanted = self.compile == "always" or (
            self.compile == "auto" and expected_images >= COMPILE_MIN_IMAGES
        )
        if wanted and images.shape[0] <= self.batch_size:
            if self._compiled is None:
                self._compiled = CompiledForward(self.model, self.batch_size)
            return self._compiled(images)
        return self.model(images)

    @classmethod
    def from_run(
        cls,
        run_dir: Path | str,
        precision: str = "auto",
        compile: str = "auto",
        batch_size: int = 32,
        device: str = "cpu",
    ) -> Predictor:
        """Load `run_dir/model.pt` (weights only, never unpickled objects)."""
        path = resolve_run_dir(run_dir)
        state, meta = read_model_file(path / "model.pt")
        label_tasks = tuple(name for name in available_tasks() if isinstance(get_task(name), LabelTask))
        require_task(meta, label_tasks, path, "this command")
        model = load_classifier(state, meta, path / "model.pt")
        return cls(model, meta, precision, compile, batch_size, device)

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor, expected_images: int = 0) -> torch.Tensor:
        """Images [B, 3, S, S] (normalised) -> probabilities [B, C] in float32.

        `expected_images` is the size of the whole job; with `compile="auto"` large jobs are
        compiled (a one-off cost of 10-25 s that pays back after 1,000-2,000 images).
        """
        images = images.to(self.device).contiguous(memory_format=torch.channels_last)
        with autocast(self.bf16, self.device):
            logits = self._forward(images, expected_images)
        return self.task.probabilities(logits.float()).cpu()

    def predict_files(
        self, paths: Sequence[Path], progress: bool = False, job_images: int | None = None
    ) -> tuple[torch.Tensor, list[Path], list[tuple[Path, str]]]:
        """Probabilities [N, C] for the readable files among `paths`, those files, and the skipped ones.

        `job_images` is the size of the whole job when `paths` is one part of it (a Ray shard), so
        the part is compiled or not as the whole job would be, and gives the same numbers.
        """
        readable, skipped = [], []
        dataset = ImageFileDataset(paths, torch.zeros(len(paths)), self.transform, self.meta.image_size)
        for index, path in enumerate(paths):
            try:
                dataset.image(index)
                readable.append(path)
            except UnreadableImageError as exc:
                skipped.append((path, exc.reason))
        dataset = ImageFileDataset(
            readable, torch.zeros(len(readable)), self.transform, self.meta.image_size, cache=dataset.cache
        )
        batch_size = self.batch_size
        batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(
            DataLoader(dataset, batch_size=batch_size)
        )
        if progress:
            from tqdm import tqdm

            batches = iter(tqdm(batches, total=(len(readable) + batch_size - 1) // batch_size, unit="batch"))
        expected = len(readable) if job_images is None else job_images
        chunks = [self.probabilities(images, expected_images=expected) for images, _ in batches]
        probs = torch.cat(chunks) if chunks else torch.zeros(0, len(self.meta.class_names))
        return probs, readable, skipped


def load_classifier(state: dict[str, torch.Tensor], meta: ModelMeta, source: Path) -> ImageClassifier:
    """Rebuild the network described by `meta` and load `state` into it."""
    from ewaste_vision.errors import RunError
    from ewaste_vision.model_meta import HeadSettings
    from ewaste_vision.models.classifier import build_classifier

    head = HeadSettings.of(meta, source)  # `linear`, or the iCAM settings the run was trained with
    model, _ = build_classifier(
        meta.backbone, len(meta.class_names), meta.dropout, pretrained=False, head=head
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RunError(
            f"{source}: weights do not fit a {meta.backbone} classifier; the file is damaged"
        ) from exc
    return model
