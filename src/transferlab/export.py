"""Export a bundle to ONNX or TorchScript, checked against PyTorch on real images.

Exported models take a normalised float batch ``image`` (N, 3, S, S) and return softmax
``probabilities`` (N, C). The preprocessing that makes ``image`` (resize, centre crop,
mean/std) and the class names travel inside the file: ONNX ``metadata_props`` under
``transferlab.*`` keys, a ``transferlab.json`` extra file in TorchScript archives.

Every export is run on real images and compared with the PyTorch model it came from; a
probability that differs by more than :data:`PARITY_TOLERANCE` fails the export and
leaves no file behind. ``--prune`` and ``--quantize`` change the model on purpose, so
they report the accuracy change on an evaluation set instead.

An export of a run folder also carries content digests of the run's training images
(:mod:`transferlab.provenance`), so ``evaluate`` warns when the file is scored on them.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferlab.backends import Backend, OnnxBackend, TorchBackend
from transferlab.bundle import Bundle, find_bundle_dir, load_bundle, save_bundle
from transferlab.compress import (
    QUANTIZE_MODES,
    FinetuneConfig,
    finetune_pruned,
    make_permanent,
    prune_magnitude,
    quantize_int8,
    sparsity,
)
from transferlab.data.images import ImageReadError, load_image
from transferlab.data.store import ImageSet, decode_all
from transferlab.data.transforms import eval_batch, to_base
from transferlab.errors import ConfigError, DatasetError
from transferlab.evaluate import load_eval_set, predict_set, run_split
from transferlab.files import replace_when_done
from transferlab.onnx_contract import (
    INPUT_NAME,
    ExportError,
    export_meta,
    export_onnx,
    set_onnx_metadata,
    weights_digest,
    with_softmax,
)
from transferlab.predict import expand_inputs
from transferlab.provenance import META_KEY as TRAINING_IMAGES_KEY
from transferlab.provenance import encode_training_images

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript", "bundle")
PARITY_TOLERANCE = 1e-4
PARITY_IMAGES = 64
CALIBRATION_IMAGES = 128
TORCHSCRIPT_META = "transferlab.json"


@dataclass
class ExportReport:
    """What ``transferlab export`` prints (and ``--json`` returns)."""

    path: str
    format: str
    size_bytes: int
    seconds: float
    parity_images: int = 0
    parity_max_abs_diff: float | None = None
    evaluated: str | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    top1_agreement: float | None = None
    quantization: dict[str, Any] | None = None
    pruning: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def accuracy_change(self) -> float | None:
        if self.accuracy_before is None or self.accuracy_after is None:
            return None
        return self.accuracy_after - self.accuracy_before

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy_change": self.accuracy_change}


def export_torchscript(bundle: Bundle, out: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``bundle`` as a traced TorchScript archive with its metadata to ``out``."""
    size = bundle.preprocessing.input_size
    meta = json.dumps(export_meta(bundle, extra), ensure_ascii=False)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # PyTorch marks TorchScript as deprecated
            traced = torch.jit.trace(with_softmax(bundle.model), torch.zeros(1, 3, size, size))
            torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_META: meta})

    replace_when_done(out, write)
    return out


def load_torchscript(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    files = {TORCHSCRIPT_META: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return module, json.loads(files[TORCHSCRIPT_META])


def max_abs_diff(reference: Backend, candidate: Backend, images: torch.Tensor) -> float:
    """Largest difference of any class probability between two backends on ``images``."""
    worst = 0.0
    for batch in images.split(16):
        diff = (reference.predict(batch) - candidate.predict(batch)).abs().max()
        worst = max(worst, float(diff))
    return worst


def _unlabelled_images(data: Path, bundle: Bundle) -> torch.Tensor:
    arrays = []
    for p in expand_inputs([data])[:PARITY_IMAGES]:
        try:
            arrays.append(to_base(load_image(p), bundle.preprocessing))
        except ImageReadError:
            continue
    if not arrays:
        raise DatasetError(f"no readable images in {data} for the parity check")
    return torch.from_numpy(np.stack(arrays))


def _sample_rows(images: torch.Tensor, limit: int) -> torch.Tensor:
    if len(images) <= limit:
        return images
    return images[torch.linspace(0, len(images) - 1, limit).long()]


@dataclass(frozen=True)
class ExportOptions:
    """One ``transferlab export`` call, built once at the edge."""

    format: str
    out: Path
    data: Path | None = None  # evaluation images (labelled), or any images for the parity check
    quantize: str | None = None
    prune: float | None = None
    finetune_epochs: int = 0
    calibration: Path | None = None  # images for int8 calibration

    @property
    def changes_model(self) -> bool:
        return self.quantize is not None or self.prune is not None

    def check(self) -> ExportOptions:
        if self.format not in FORMATS:
            raise ConfigError(f"--format '{self.format}' is not one of: {', '.join(FORMATS)}")
        if self.quantize is not None and self.quantize not in QUANTIZE_MODES:
            raise ConfigError(f"--quantize '{self.quantize}' is not one of: int8")
        if self.quantize and self.format != "onnx":
            raise ConfigError("--quantize works with --format onnx (ONNX Runtime int8)")
        if self.format == "bundle" and self.prune is None:
            raise ConfigError("--format bundle writes a pruned copy; add --prune AMOUNT")
        if self.finetune_epochs and self.prune is None:
            raise ConfigError("--finetune-epochs fine-tunes after pruning; add --prune AMOUNT")
        if self.finetune_epochs < 0:
            raise ConfigError("--finetune-epochs must be >= 0")
        return self


@dataclass
class _EvalImages:
    images: torch.Tensor  # uint8 base images for the parity check
    labelled: ImageSet | None
    described: str


def _evaluation_images(
    reference: Backend, model_path: Path, options: ExportOptions, bundle: Bundle
) -> _EvalImages:
    """The evaluation set (labelled when it can be), and images for the parity check."""
    try:
        labelled, described, _ = load_eval_set(reference, model_path, options.data)
    except DatasetError:
        if options.changes_model or options.data is None:
            if options.data is None:
                raise ConfigError(
                    f"{model_path} is not a run folder, so there are no images to check the "
                    "export on; pass --data DIR (labelled images also measure accuracy)"
                ) from None
            raise
        images = _unlabelled_images(options.data, bundle)
        return _EvalImages(images, None, f"{len(images)} images in {options.data}")
    assert labelled.images is not None  # decode_all keeps small sets in memory
    images = _sample_rows(labelled.images, PARITY_IMAGES)
    return _EvalImages(images, labelled, described)


def _calibration_images(
    model_path: Path, options: ExportOptions, bundle: Bundle, fallback: _EvalImages
) -> tuple[torch.Tensor, str]:
    if options.calibration is not None:
        images = _unlabelled_images(options.calibration, bundle)
        return images, f"{len(images)} images in {options.calibration}"
    found = run_split(model_path)
    if found is not None and found[1].train:
        _, split = found
        step = max(1, len(split.train) // CALIBRATION_IMAGES)
        samples = split.train[::step][:CALIBRATION_IMAGES]
        decoded, _ = decode_all(samples, split.classes, bundle.preprocessing, 4096)
        if decoded.images is not None and len(decoded):
            return decoded.images, f"{len(decoded)} images of the run's train split"
    logger.warning(
        "calibrating int8 on the evaluation images, which flatters the accuracy measured on "
        "them; pass --calibration DIR with other images"
    )
    return fallback.images, f"the {len(fallback.images)} evaluation images"


def _accuracy(backend: Backend, images: ImageSet) -> tuple[float, torch.Tensor]:
    probs = predict_set(backend, images)
    return float((probs.argmax(1) == images.targets).float().mean()), probs


def _prune(bundle: Bundle, model_path: Path, options: ExportOptions) -> dict[str, Any]:

    assert options.prune is not None
    prune_magnitude(bundle.model, options.prune)
    info: dict[str, Any] = {"method": "global L1 magnitude", "amount": options.prune}
    if options.finetune_epochs:
        found = run_split(model_path)
        if found is None:
            raise ConfigError(
                "--finetune-epochs needs a run folder (its train/val split); give the run folder"
            )
        raw, split = found
        cfg = FinetuneConfig.from_run(raw, options.finetune_epochs)
        info["finetune"] = finetune_pruned(bundle.model, split, bundle.preprocessing, cfg)
    make_permanent(bundle.model)
    info["sparsity"] = round(sparsity(bundle.model), 6)
    return info


def _check_parity(
    report: ExportReport, reference: Backend, exported: Backend, x: torch.Tensor
) -> None:
    diff = max_abs_diff(reference, exported, x)
    report.parity_images, report.parity_max_abs_diff = len(x), diff
    if not diff <= PARITY_TOLERANCE:  # also catches NaN
        Path(report.path).unlink(missing_ok=True)
        raise ExportError(
            f"the {report.format} export differs from PyTorch by {diff:.2e} (> "
            f"{PARITY_TOLERANCE:.0e}) in some class probability on {len(x)} real images; "
            "the file was removed. Rerun with --debug and report the architecture"
        )


def _write(
    bundle: Bundle,
    reference: TorchBackend,
    options: ExportOptions,
    extra: dict[str, Any],
    checked: _EvalImages,
    report: ExportReport,
    model_path: Path,
) -> Backend:
    """Write the chosen format; returns a backend running the written file."""
    out = options.out
    if options.format == "bundle":
        meta = export_meta(bundle, extra)
        save_bundle(
            out,
            bundle.model,
            bundle.architecture,
            bundle.class_names,
            bundle.preprocessing,
            {k: meta[k] for k in ("training", "pruning", TRAINING_IMAGES_KEY) if k in meta},
        )
        return TorchBackend.from_bundle(load_bundle(out), out)
    if options.format == "torchscript":
        export_torchscript(bundle, out, extra)
        module, meta = load_torchscript(out)
        exported: Backend = TorchBackend(module, meta, out, softmax=False)
        _check_parity(report, reference, exported, checked.images)
        return exported
    if options.quantize is None:
        export_onnx(bundle, out, extra)
        exported = OnnxBackend(out)
        _check_parity(report, reference, exported, checked.images)
        return exported
    calibration, described = _calibration_images(model_path, options, bundle, checked)
    with tempfile.TemporaryDirectory(prefix="transferlab-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(bundle, fp32, extra)
        fp32_backend = OnnxBackend(fp32)
        report.path = str(fp32)  # the parity check is of the float export
        _check_parity(report, reference, fp32_backend, checked.images)
        report.path = str(out)
        x = torch.cat([eval_batch(c, bundle.preprocessing) for c in calibration.split(32)])
        replace_when_done(out, lambda p: quantize_int8(fp32, p, x, INPUT_NAME))
        quantization: dict[str, Any] = {
            "method": "ONNX Runtime static int8, QDQ, per-channel weights",
            "calibration": described,
        }
        set_onnx_metadata(out, export_meta(bundle, {**extra, "quantization": quantization}))
        exported = OnnxBackend(out)
        quantization["max_abs_diff_vs_fp32"] = max_abs_diff(fp32_backend, exported, checked.images)
        report.quantization = quantization
    return exported


def _training_images(model_path: Path) -> dict[str, Any] | None:
    """Digests of the run's training images, so the export can tell when it is scored on
    them; None (said) when ``model_path`` is not a run or its images cannot be read."""
    try:
        found = run_split(model_path)
    except DatasetError as exc:
        logger.warning("%s; the export will not recognise its training images", exc)
        return None
    if found is None:
        logger.info(
            "%s is not a run folder: the export will not recognise its training images",
            model_path,
        )
        return None
    return encode_training_images(s.path for s in found[1].train)


def export_model(model_path: Path, options: ExportOptions) -> ExportReport:
    """Export (and optionally prune / quantise) a bundle; check it; report what changed."""
    started = time.perf_counter()
    options.check()
    bundle_dir = find_bundle_dir(model_path)
    bundle = load_bundle(bundle_dir)
    reference = TorchBackend.from_bundle(bundle, bundle_dir)
    checked = _evaluation_images(reference, model_path, options, bundle)
    report = ExportReport(str(options.out), options.format, 0, 0.0, evaluated=checked.described)
    before: torch.Tensor | None = None
    if checked.labelled is not None and options.changes_model:
        report.accuracy_before, before = _accuracy(reference, checked.labelled)
    extra: dict[str, Any] = {"source": str(bundle_dir)}
    trained_on = _training_images(model_path)
    if trained_on is not None:
        extra[TRAINING_IMAGES_KEY] = trained_on
    if options.prune is not None:
        report.pruning = extra["pruning"] = _prune(bundle, model_path, options)
    else:
        extra["weights_sha256"] = weights_digest(bundle_dir)
    exported = _write(bundle, reference, options, extra, checked, report, model_path)
    if checked.labelled is not None and before is not None:
        report.accuracy_after, after = _accuracy(exported, checked.labelled)
        report.top1_agreement = float((after.argmax(1) == before.argmax(1)).float().mean())
    out = options.out
    report.size_bytes = (
        sum(f.stat().st_size for f in out.rglob("*")) if out.is_dir() else out.stat().st_size
    )
    report.seconds = round(time.perf_counter() - started, 2)
    return report
