"""Inference backends: a PyTorch bundle or an ONNX Runtime session, one interface.

Both take uint8 base images (see :mod:`transferlab.data.transforms`), cut the views of the
chosen test-time augmentation with the same code, and return class probabilities, so a
prediction differs between backends only by the numerics of the runtime.

An ONNX file written by ``transferlab export`` describes itself: class names, preprocessing
and the bundle's summary live in its metadata (see :mod:`transferlab.onnx_contract`), so it
is enough on its own.
"""

from __future__ import annotations

import logging
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferlab.bundle import (
    Bundle,
    find_bundle_dir,
    load_bundle,
    read_meta,
    reject_below_of,
    temperature_of,
)
from transferlab.calibration import apply_temperature
from transferlab.data.transforms import Preprocessing
from transferlab.errors import BundleError, ConfigError
from transferlab.models.layout import for_inference, is_channels_last, memory_format
from transferlab.onnx_contract import decode_onnx_meta, export_onnx, weights_digest
from transferlab.tta import tta_probabilities

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
ONNX_FILE = "model.onnx"  # an export kept beside the bundle, used by --backend onnx


class Backend(ABC):
    """Class probabilities for uint8 base images, with optional test-time augmentation."""

    name: str

    def __init__(self, meta: dict[str, Any], source: Path) -> None:
        self.meta = meta
        self.source = source
        self.architecture = str(meta["architecture"])
        self.class_names = [str(c) for c in meta["class_names"]]
        self.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        self.temperature = temperature_of(meta, source)
        self.reject_below = reject_below_of(meta, source)  # the model's default threshold

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float batch (N, 3, S, S) -> probabilities (N, C), on the CPU."""

    def calibrated_forward(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with the bundle's temperature applied to each view, before any TTA
        average; in probability space, so torch and ONNX (softmax output) agree."""
        return apply_temperature(self.forward(x), self.temperature)

    def predict(self, images: np.ndarray | torch.Tensor, tta: str = "none") -> torch.Tensor:
        """uint8 base images (N, 3, B, B) -> probabilities (N, C) averaged over TTA views."""
        x = torch.as_tensor(images)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        return tta_probabilities(self.calibrated_forward, x, self.preprocessing, tta)

    def describe(self) -> dict[str, Any]:
        """What ``GET /model`` and the reports say about the model."""
        return {
            "architecture": self.architecture,
            "class_names": self.class_names,
            "num_classes": len(self.class_names),
            "preprocessing": self.preprocessing.to_dict(),
            "backend": self.name,
            "metrics": self.meta.get("metrics", {}),
            "temperature": self.temperature,
            "reject_below": self.reject_below,
            "transferlab_version": self.meta.get("transferlab_version"),
        }


class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self, model: nn.Module, meta: dict[str, Any], source: Path, softmax: bool = True
    ) -> None:
        super().__init__(meta, source)
        self.model = for_inference(model).eval()
        self.device = next(self.model.parameters()).device
        self.format = memory_format(is_channels_last(self.model))
        self.softmax = softmax  # False for exports whose output already is probabilities

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x.to(self.device).contiguous(memory_format=self.format)).float()
        return (out.softmax(dim=1) if self.softmax else out).cpu()

    @classmethod
    def from_bundle(cls, bundle: Bundle, source: Path) -> TorchBackend:
        return cls(bundle.model, bundle.meta, source)


class OnnxBackend(Backend):
    name = "onnx"

    def __init__(self, path: Path, threads: int | None = None, model_bytes: bytes | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                model_bytes if model_bytes is not None else str(path),
                options,
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise BundleError(f"{path} is not a loadable ONNX model ({exc})") from exc
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        super().__init__(decode_onnx_meta(props, path), path)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: x.detach().cpu().numpy().astype(np.float32, copy=False)}
        return torch.from_numpy(self.session.run(None, feed)[0])

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        for key in ("quantization", "pruning"):
            if key in self.meta:
                out[key] = self.meta[key]
        return out


def _bundle_onnx(bundle_dir: Path, threads: int | None) -> OnnxBackend:
    """The bundle's kept ``model.onnx`` when it matches the weights, else a fresh export."""
    kept = bundle_dir / ONNX_FILE
    digest = weights_digest(bundle_dir)
    if kept.is_file():
        backend = OnnxBackend(kept, threads)
        if backend.meta.get("weights_sha256") == digest and "quantization" not in backend.meta:
            # model.json may have been given a threshold (or temperature) after the export
            meta = read_meta(bundle_dir)
            backend.temperature = temperature_of(meta, bundle_dir)
            backend.reject_below = reject_below_of(meta, bundle_dir)
            return backend
        logger.warning("%s was exported from other weights; exporting again", kept)
    logger.info(
        "exporting %s to ONNX for this run (keep one with 'transferlab export %s --format onnx "
        "--out %s' to skip this)",
        bundle_dir,
        bundle_dir,
        kept,
    )
    bundle = load_bundle(bundle_dir)
    with tempfile.TemporaryDirectory(prefix="transferlab-onnx-") as tmp:
        path = Path(tmp) / ONNX_FILE
        export_onnx(bundle, path, {"weights_sha256": digest})
        return OnnxBackend(bundle_dir, threads, model_bytes=path.read_bytes())


def load_backend(path: Path, backend: str | None = None, threads: int | None = None) -> Backend:
    """A backend for a bundle, a run folder or an exported ``.onnx`` file.

    ``backend`` None picks ONNX Runtime for ``.onnx`` files and PyTorch for bundles.
    """
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"--backend '{backend}' is not one of: {', '.join(BACKENDS)}")
    if path.suffix.lower() == ".onnx":
        if backend == "torch":
            raise ConfigError(f"{path} is an ONNX file; use --backend onnx or give a bundle")
        if not path.is_file():
            raise BundleError(f"model not found: {path}")
        return OnnxBackend(path, threads)
    directory = find_bundle_dir(path)
    if backend == "onnx":
        return _bundle_onnx(directory, threads)
    if threads:
        torch.set_num_threads(threads)
    return TorchBackend.from_bundle(load_bundle(directory), directory)
