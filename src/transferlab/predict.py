"""Top-k predictions for image files, with any backend and optional test-time augmentation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from transferlab.backends import Backend
from transferlab.calibration import UNKNOWN, check_reject_below, is_rejected
from transferlab.data.images import ImageReadError, is_image_file, load_image
from transferlab.data.transforms import to_base
from transferlab.errors import DatasetError


@dataclass(frozen=True)
class Prediction:
    path: str
    labels: list[str]
    probabilities: list[float]
    error: str | None = None
    rejected: bool = False  # the top probability was below the reject threshold

    @property
    def label(self) -> str | None:
        """The answer: the top class, or ``unknown`` when rejected."""
        if self.rejected:
            return UNKNOWN
        return self.labels[0] if self.labels else None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"path": self.path}
        if self.error:
            out["error"] = self.error
        else:
            out["label"] = self.label
            out["rejected"] = self.rejected
            out["top_k"] = [
                {"label": lab, "probability": round(p, 6)}
                for lab, p in zip(self.labels, self.probabilities, strict=True)
            ]
        return out


def expand_inputs(inputs: Iterable[Path]) -> list[Path]:
    """Files as given, folders expanded to the images inside them (recursively, sorted)."""
    out: list[Path] = []
    for p in inputs:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f)))
        elif p.exists():
            out.append(p)
        else:
            raise DatasetError(f"image not found: {p}")
    return out


def top_k(
    probs: torch.Tensor, class_names: Sequence[str], k: int
) -> list[tuple[list[str], list[float]]]:
    k = max(1, min(k, len(class_names)))
    values, indices = probs.topk(k, dim=1)
    return [
        ([class_names[i] for i in idx.tolist()], [float(v) for v in val.tolist()])
        for val, idx in zip(values, indices, strict=True)
    ]


def predict_files(
    backend: Backend,
    paths: Sequence[Path],
    k: int = 5,
    batch_size: int = 32,
    tta: str = "none",
    reject_below: float | None = None,
) -> list[Prediction]:
    """Predict each file; unreadable files get a Prediction with ``error`` set.

    A file whose top probability is below ``reject_below`` (default: the model's own
    ``reject_below``, if any; 0 answers every file) is answered ``unknown``, its top-k kept.
    """
    threshold = check_reject_below(reject_below)
    if threshold is None:
        threshold = backend.reject_below
    results: list[Prediction] = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        arrays: list[np.ndarray] = []
        ok: list[Path] = []
        errors: dict[Path, str] = {}
        for p in chunk:
            try:
                arrays.append(to_base(load_image(p), backend.preprocessing))
                ok.append(p)
            except ImageReadError as exc:
                errors[p] = str(exc)
        ranked = (
            iter(top_k(backend.predict(np.stack(arrays), tta), backend.class_names, k))
            if arrays
            else iter(())
        )
        for p in chunk:
            if p in errors:
                results.append(Prediction(str(p), [], [], errors[p]))
            else:
                labels, probs = next(ranked)
                rejected = is_rejected(probs[0], threshold)
                results.append(Prediction(str(p), labels, probs, rejected=rejected))
    return results
