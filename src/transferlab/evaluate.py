"""Evaluate a saved model on labelled images, choosing the held-out split when it can."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from transferlab import __version__
from transferlab.bundle import Bundle, load_bundle
from transferlab.config import from_dict, load_yaml
from transferlab.data.discover import Sample, discover
from transferlab.data.split import read_split_csv
from transferlab.errors import DatasetError
from transferlab.pipeline import data_root, decode_all, evaluate_images, write_predictions


def _run_split_for(model_path: Path, data: Path) -> list[Sample] | None:
    """If ``model_path`` is a run trained on ``data``, its held-out split (test, else val)."""
    split_csv = model_path / "split.csv"
    config = model_path / "config.yaml"
    if not (split_csv.is_file() and config.is_file()):
        return None
    cfg = from_dict(load_yaml(config))
    if Path(cfg.data.path).resolve() != data.resolve():
        return None
    split = read_split_csv(split_csv, data_root(cfg))
    return split.test or split.val


def select_eval_samples(model_path: Path, data: Path, which: str) -> tuple[list[Sample], str]:
    """Which labelled images ``evaluate`` uses, and a word saying which."""
    if which == "auto":
        held_out = _run_split_for(model_path, data)
        if held_out:
            return held_out, f"the run's held-out {held_out[0].split} split"
    found = discover(data)
    splits = {s.split for s in found.samples}
    if which == "all" or (which == "auto" and splits <= {None}):
        return found.samples, "all images"
    if which == "auto":
        which = "test" if "test" in splits else "val"
    chosen = [s for s in found.samples if s.split == which]
    if not chosen:
        raise DatasetError(f"{data} has no {which} split; use --split all")
    return chosen, f"the {which} split"


def evaluate_model(
    model_path: Path, data: Path, which: str = "auto", out: Path | None = None
) -> dict[str, Any]:
    """Evaluate a bundle on labelled images; optionally write ``metrics.json`` into ``out``."""
    bundle: Bundle = load_bundle(model_path)
    samples, described = select_eval_samples(model_path, data, which)
    unknown = sorted({s.label for s in samples} - set(bundle.class_names))
    if unknown:
        raise DatasetError(
            f"class '{unknown[0]}' in {data} is not one the model knows "
            f"({', '.join(bundle.class_names)}); remove it or retrain"
        )
    images, skipped = decode_all(samples, bundle.class_names, bundle.preprocessing, 4096)
    if not len(images):
        raise DatasetError(f"no readable images to evaluate in {data}")
    metrics, probs = evaluate_images(
        bundle.model, images, bundle.class_names, bundle.preprocessing, torch.device("cpu")
    )
    metrics.update(
        {
            "evaluated": described,
            "data": str(data),
            "model": str(model_path),
            "skipped_files": len(skipped),
            "skipped": [{"path": str(p), "reason": why} for p, why in skipped],
            "transferlab_version": __version__,
        }
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_predictions(out / "predictions.csv", images, probs, bundle.class_names, data)
        (out / "metrics.json").write_text(
            json.dumps(metrics, indent=2, ensure_ascii=False), "utf-8"
        )
    return metrics
