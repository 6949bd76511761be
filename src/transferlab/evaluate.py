"""Evaluate a saved model on labelled images, choosing the held-out split when it can."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from transferlab import __version__
from transferlab.backends import Backend, load_backend
from transferlab.bundle import display_names
from transferlab.calibration import reliability, risk_coverage
from transferlab.config import load_yaml
from transferlab.data.discover import Sample, discover
from transferlab.data.predictions import write_predictions
from transferlab.data.split import SplitSamples, read_split_csv
from transferlab.data.store import ImageSet, decode_all, iterate_batches
from transferlab.errors import DatasetError
from transferlab.files import replace_when_done
from transferlab.metrics import classification_report
from transferlab.provenance import META_KEY as TRAINING_IMAGES_KEY
from transferlab.provenance import PHASH_KEY, count_known, decode_phashes, decode_training_images
from transferlab.tta import check_mode

logger = logging.getLogger(__name__)


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


def _own_split(model_path: Path, data: Path | None) -> SplitSamples | None:
    """The run's saved split when ``model_path`` is a run trained on ``data`` (or ``data``
    is None); its config is read first, so a run of other data never needs its images."""
    run = run_dir_of(model_path)
    if run is None:
        return None
    data_path = (load_yaml(run / "config.yaml").get("data") or {}).get("path")
    if data is not None and data_path and Path(data_path).expanduser().resolve() != data.resolve():
        return None
    found = run_split(model_path)
    return found[1] if found else None


def _from_split_file(
    split: SplitSamples, which: str, model_path: Path
) -> tuple[list[Sample], str] | None:
    """``which`` of the run's own split; None for ``auto`` when it holds no images out."""
    if which == "auto":
        held_out = split.test or split.val
        return (held_out, f"the run's held-out {held_out[0].split} split") if held_out else None
    chosen, other = (split.test, "val") if which == "test" else (split.val, "test")
    if not chosen:
        has_other = split.val if which == "test" else split.test
        hint = f"--split {other}" if has_other else "--split all (its training images too)"
        where = (run_dir_of(model_path) or model_path) / "split.csv"
        raise DatasetError(f"{where} has no {which} images; use {hint}")
    return chosen, f"the run's {which} split"


def select_eval_samples(
    model_path: Path, data: Path | None, which: str
) -> tuple[list[Sample], str]:
    """Which labelled images ``evaluate`` uses, and a word saying which.

    When ``model_path`` is a run and ``data`` its data (or None), ``auto``, ``test`` and
    ``val`` come from the run's ``split.csv``; otherwise from ``data``'s own layout.
    """
    split = _own_split(model_path, data)
    if split is not None and which != "all":
        chosen = _from_split_file(split, which, model_path)
        if chosen is not None:
            return chosen
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
    chosen_samples = [s for s in found.samples if s.split == which]
    if not chosen_samples:
        raise DatasetError(f"{data} has no {which} split; use --split all")
    return chosen_samples, f"the {which} split"


def training_images_among(
    model_path: Path, backend: Backend, data: Path | None, paths: list[Path]
) -> int | None:
    """How many of ``paths`` the model was trained on; None when that cannot be known.

    A run knows from its ``split.csv``; an export from the digests in its metadata.
    """
    split = _own_split(model_path, data)
    if split is not None:
        train = {s.path.resolve() for s in split.train}
        return sum(p.resolve() in train for p in paths)
    digests = decode_training_images(backend.meta.get(TRAINING_IMAGES_KEY))
    return None if digests is None else count_known(paths, digests)


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


def _warn_absent(metrics: dict[str, Any]) -> None:
    absent = metrics.get("absent_classes") or []
    if absent:
        logger.warning(
            "model classes with no images here: %s; macro averages are over the %d classes "
            "with images",
            ", ".join(absent),
            len(metrics["macro_classes"]),
        )


def _check_training_images(
    metrics: dict[str, Any], model_path: Path, runner: Backend, data: Path, images: ImageSet
) -> None:
    """Record (and warn) how many evaluated images the model was trained on."""
    if metrics["evaluated"].startswith("the run's"):
        return  # the run's own val/test split: held out by construction
    known = training_images_among(model_path, runner, data, [s.path for s in images.samples])
    if known is None:
        return
    metrics["training_images_evaluated"] = known
    if known:
        logger.warning(
            "%d of the %d evaluated images are training images of this model, so these scores "
            "flatter it; evaluate held-out images (--split auto on the run's data, or others)",
            known,
            len(images),
        )


def _check_near_copies(metrics: dict[str, Any], runner: Backend, images: ImageSet) -> None:
    """Record (and warn) how many evaluated images are copies of training images, resized
    or re-encoded ones too, by the perceptual hashes a run stores in its bundle."""
    reference = decode_phashes(runner.meta.get(PHASH_KEY))
    if reference is None or metrics["evaluated"].startswith("the run's"):
        return  # no hashes stored, or the run's own split (copies kept in one split)
    from transferlab.audit.hashes import all_facts, near_any

    facts = [f for f in all_facts([s.path for s in images.samples]) if not f.error]
    near = int(near_any([f.phash for f in facts if not f.flat], reference).sum())
    metrics["near_copies_of_training_images"] = near
    if near:
        logger.warning(
            "%d of the %d evaluated images are copies (exact or resized) of this model's "
            "training images; 'transferlab audit' lists duplicates",
            near,
            len(images),
        )


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
    ``risk_coverage`` lists, for thresholds 0, 0.05, ..., 1 on the top probability, the share
    of images answered (coverage) and their accuracy; ``ece`` is the calibration error of the
    probabilities (with the model's temperature). Macro averages
    are over the classes with images in the data; ``training_images_evaluated`` counts
    evaluated images the model was trained on, where that can be known.
    """
    check_mode(tta)
    runner = load_backend(model_path, backend)
    images, described, skipped = load_eval_set(runner, model_path, data, which)
    probs = predict_set(runner, images, tta)
    metrics = score(probs, images, runner.class_names)
    # how accuracy rises as low-confidence answers become "unknown", to choose --reject-below
    metrics["risk_coverage"] = risk_coverage(probs, images.targets)
    metrics["ece"] = reliability(probs, images.targets).ece
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
    _warn_absent(metrics)
    _check_training_images(metrics, model_path, runner, data, images)
    _check_near_copies(metrics, runner, images)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_predictions(
            out / "predictions.csv",
            images,
            probs,
            runner.class_names,
            data,
            display_names=display_names(runner.meta),
        )
        replace_when_done(
            out / "metrics.json",
            lambda p: p.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), "utf-8"),
        )
    return metrics
