"""``predictions.csv``: one row per evaluated image, written by train and evaluate."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from transferlab.data.split import relative_path
from transferlab.data.store import ImageSet


def write_predictions(
    path: Path,
    data: ImageSet,
    probs: torch.Tensor,
    class_names: list[str],
    root: Path,
    display_names: list[str] | None = None,
) -> None:
    """One row per image: path, true label, predicted label, confidence, every class's p,
    then the predicted class's display name (labels stay folder names: tools key on them)."""
    display = dict(zip(class_names, display_names or class_names, strict=True))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "path",
                "label",
                "predicted",
                "confidence",
                *[f"p_{c}" for c in class_names],
                "predicted_name",
            ]
        )
        for sample, p in zip(data.samples, probs.tolist(), strict=True):
            best = max(range(len(p)), key=p.__getitem__)
            rel = relative_path(sample.path, root)
            predicted = class_names[best]
            writer.writerow(
                [
                    rel,
                    sample.label,
                    predicted,
                    f"{p[best]:.6f}",
                    *[f"{v:.6f}" for v in p],
                    display[predicted],
                ]
            )
