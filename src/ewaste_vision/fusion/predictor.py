"""A trained fusion run ready for inference: pairs of (RGB, X-ray) images -> class probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ewaste_vision.data.records import ImageRecord
from ewaste_vision.errors import RunError
from ewaste_vision.fusion.data import MODALITIES
from ewaste_vision.fusion.features import readable_images, sparse_features
from ewaste_vision.fusion.model import TwoStreamFusion
from ewaste_vision.fusion.pairing import Pair
from ewaste_vision.hardware import use_bf16
from ewaste_vision.model_meta import ModelMeta
from ewaste_vision.runs import MODEL_FILE, read_model_file, require_task, resolve_run_dir

FUSION_TASK = "fuse"


class FusionPredictor:
    """A `TwoStreamFusion` with the metadata of its two streams."""

    def __init__(
        self, model: TwoStreamFusion, meta: ModelMeta, streams: dict[str, ModelMeta], precision: str
    ) -> None:
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.meta = meta
        self.streams = streams
        self.bf16 = use_bf16(precision)

    @classmethod
    def from_run(cls, run_dir: Path | str, precision: str = "auto") -> FusionPredictor:
        """Load `run_dir/model.pt` (weights only)."""
        path = resolve_run_dir(run_dir)
        state, meta = read_model_file(path / MODEL_FILE)
        require_task(meta, (FUSION_TASK,), path, "this command")
        model, streams = load_fusion(state, meta, path / MODEL_FILE)
        return cls(model, meta, streams, precision)

    @torch.inference_mode()
    def predict_pairs(
        self,
        rgb: Sequence[ImageRecord],
        xray: Sequence[ImageRecord],
        pairs: Sequence[Pair],
        stream_logits: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[int], list[tuple[str, str]]]:
        """Fused probabilities [N, C] of the `pairs` whose two files decode.

        Returns:
            Fused probabilities, each stream's own probabilities {modality: [N, C]} (its
            classification layer after fusion training; its logits with `stream_logits`), the
            indices of the scored pairs, and the unreadable files with their reasons.
        """
        sides = {"rgb": list(rgb), "xray": list(xray)}
        features: dict[str, dict[tuple[int, int], torch.Tensor]] = {}
        skipped: list[tuple[str, str]] = []
        for modality in MODALITIES:
            wanted = sorted(
                {(getattr(p, modality), p.orientation if modality == "xray" else 0) for p in pairs}
            )
            indices = sorted({index for index, _ in wanted})
            kept, images, bad = readable_images([sides[modality][i] for i in indices], self.streams[modality])
            skipped += bad
            readable = {r.path for r in kept}
            position = {
                index: n for n, index in enumerate(i for i in indices if sides[modality][i].path in readable)
            }
            stream = self.model.rgb if modality == "rgb" else self.model.xray
            table = sparse_features(
                stream, images, [(position[i], o) for i, o in wanted if i in position], self.bf16
            )
            back = {n: index for index, n in position.items()}
            features[modality] = {(back[n], o): value for (n, o), value in table.items()}
        scored = [
            n
            for n, p in enumerate(pairs)
            if (p.rgb, 0) in features["rgb"] and (p.xray, p.orientation) in features["xray"]
        ]
        num_classes = len(self.meta.class_names)
        if not scored:
            empty = torch.zeros(0, num_classes)
            return empty, {m: empty for m in MODALITIES}, [], skipped
        rgb_features = torch.stack([features["rgb"][(pairs[n].rgb, 0)] for n in scored])
        xray_features = torch.stack([features["xray"][(pairs[n].xray, pairs[n].orientation)] for n in scored])
        fused = self.model.fuse(rgb_features, xray_features).float().softmax(dim=1)
        g_rgb, g_xray = self.model.stream_logits(rgb_features, xray_features)
        per_stream = {"rgb": g_rgb.float(), "xray": g_xray.float()}
        if not stream_logits:
            per_stream = {m: g.softmax(dim=1) for m, g in per_stream.items()}
        return fused, per_stream, scored, skipped


def load_fusion(
    state: dict[str, torch.Tensor], meta: ModelMeta, source: Path
) -> tuple[TwoStreamFusion, dict[str, ModelMeta]]:
    """Rebuild a fusion network from `model.pt`'s weights and metadata."""
    from ewaste_vision.inference import load_classifier

    try:
        streams = {m: ModelMeta.from_dict(meta.extra["streams"][m], source) for m in MODALITIES}
    except (KeyError, TypeError) as exc:
        raise RunError(f"{source}: fusion metadata lacks its streams ({exc}); retrain the run") from exc
    networks = {
        m: load_classifier(
            {k[len(m) + 1 :]: v for k, v in state.items() if k.startswith(m + ".")}, streams[m], source
        )
        for m in MODALITIES
    }
    model = TwoStreamFusion(networks["rgb"], networks["xray"], len(meta.class_names))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RunError(f"{source}: weights do not fit a fusion network; the file is damaged") from exc
    return model.eval(), streams
