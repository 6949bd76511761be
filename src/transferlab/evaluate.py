"""Evaluate a saved model on labelled images, choosing the held-out split when it can."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from transferlab import __version__
from transferlab.backends import Backend, load_backend
from transferlab.config import load_yaml
from transferlab.data.discover import Sample, discover
from transferlab.data.predictions import write_predictions
from transferlab.data.split import SplitSamples, read_split_csv
from transferlab.data.store import ImageSet, decode_all, iterate_batches
from transferlab.errors import DatasetError
from transferlab.metrics import classification_report
from transferlab.tta import check_mode


def run_dir_of(model_path: Path) -> Path | None:
    """The run folder of ``model_path`` (a run folder or its ``model/``), if it is one."""
    for candidate in (model_path, model_path.parent):
        if (candidate / "split.csv").is_file() and (candidate / "config.yaml").is_file():
            return candidate
    return None


def run_split(model_path: Path) -> tuple[dict[str, Any], SplitSamples] | None:
    """The run's raw config and its saved train/val/test split, when ``model_path`` is a run.

    Only ``data.path`` is needed to find the images, so runs written by other versions of
    transferlab (other config keys) still work.
    """
    run = run_dir_of(model_path)
    if run is None:
        return None
    raw = load_yaml(run / "config.yaml")
    data_path = (raw.get("data") or {}).get("path")
    if not data_path:
        raise DatasetError(f"{run / 'config.yaml'} names no data.path; is it a transferlab run?")
    root = Path(data_path).expanduser().resolve()
    return raw, read_split_csv(run / "split.csv", root.parent if root.is_file() else root)


def _run_split_for(model_path: Path, data: Path | None) -> list[Sample] | None:
    """If ``model_path`` is a run trained on ``data``, its held-out split (test, else val)."""
    found = run_split(model_path)
    if found is None:
        return None
    raw, split = found
    if data is not None and Path(raw["data"]["path"]).resolve() != data.resolve():
        return None
    return split.test or split.val


def select_eval_samples(
    model_path: Path, data: Path | None, which: str
) -> tuple[list[Sample], str]:
    """Which labelled images ``evaluate`` uses, and a word saying which.

    ``data`` None means the run's own held-out split (``model_path`` must be a run).
    """
    if which == "auto" or data is None:
        held_out = _run_split_for(model_path, data)
        if held_out:
            return held_out, f"the run's held-out {held_out[0].split} split"
        if data is None:
            raise DatasetError(
                f"{model_path} is not a run folder with a held-out split; "
                "pass --data with labelled images"
            )
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


def load_eval_set(
    backend: Backend, model_path: Path, data: Path | None, which: str = "auto"
) -> tuple[ImageSet, str, list[tuple[Path, str]]]:
    """Decode the evaluation images for ``backend``; returns images, description, skipped."""
    samples, described = select_eval_samples(model_path, data, which)
    unknown = sorted({s.label for s in samples} - set(backend.class_names))
    if unknown:
        raise DatasetError(
            f"class '{unknown[0]}' in {data} is not one the model knows "
            f"({', '.join(backend.class_names)}); remove it or retrain"
        )
    images, skipped = decode_all(samples, backend.class_names, backend.preprocessing, 4096)
    if not len(images):
        raise DatasetError(f"no readable images to evaluate in {data or described}")
    return images, described, skipped


def predict_set(
    backend: Backend, images: ImageSet, tta: str = "none", batch_size: int = 32
) -> torch.Tensor:
    """Class probabilities of every image in ``images`` (N, C)."""
    outs = [backend.predict(x, tta) for x, _ in iterate_batches(images, batch_size, False)]
    return torch.cat(outs)


def score(probs: torch.Tensor, images: ImageSet, class_names: list[str]) -> dict[str, Any]:
    return classification_report(images.targets.numpy(), probs.argmax(1).numpy(), class_names)


def tta_gain(
    backend: Backend, images: ImageSet, with_tta: dict[str, Any], tta: str
) -> dict[str, Any]:
    """The same images without TTA, so the report says whether TTA pays."""
    plain = score(predict_set(backend, images, "none"), images, backend.class_names)
    return {
        "mode": tta,
        "accuracy": with_tta["accuracy"],
        "accuracy_without": plain["accuracy"],
        "accuracy_gain": with_tta["accuracy"] - plain["accuracy"],
        "macro_f1": with_tta["macro_f1"],
        "macro_f1_without": plain["macro_f1"],
        "macro_f1_gain": with_tta["macro_f1"] - plain["macro_f1"],
    }


def evaluate_model(
    model_path: Path,
    data: Path,
    which: str = "auto",
    out: Path | None = None,
    backend: str | None = None,
    tta: str = "none",
) -> dict[str, Any]:
    """Evaluate a model on labelled images; optionally write ``metrics.json`` into ``out``.

    With ``tta`` other than ``none`` the metrics are those with TTA, and ``metrics["tta"]``
    compares them with plain centre-crop predictions on the same images.
    """
    check_mode(tta)
    runner = load_backend(model_path, backend)
    images, described, skipped = load_eval_set(runner, model_path, data, which)
    probs = predict_set(runner, images, tta)
    metrics = score(probs, images, runner.class_names)
    if tta != "none":
        metrics["tta"] = tta_gain(runner, images, metrics, tta)
    metrics.update(
        {
            "evaluated": described,
            "data": str(data),
            "model": str(model_path),
            "backend": runner.name,
            "skipped_files": len(skipped),
            "skipped": [{"path": str(p), "reason": why} for p, why in skipped],
            "transferlab_version": __version__,
        }
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_predictions(out / "predictions.csv", images, probs, runner.class_names, data)
        (out / "metrics.json").write_text(
            json.dumps(metrics, indent=2, ensure_ascii=False), "utf-8"
        )
    return metrics
