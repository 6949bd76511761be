"""Make a model lighter: magnitude pruning (optionally fine-tuned) and int8 quantisation.

Pruning zeroes the smallest-magnitude weights of every convolution and linear layer,
ranked globally, so layers with many small weights give up more. The zeros make the file
compress well and suit sparse runtimes; a dense runtime runs at the same speed.

Quantisation is ONNX Runtime's static int8 (QDQ, per-channel weights): activation ranges
are calibrated on real images, which is what keeps a CNN's accuracy; dynamic quantisation
quantises only weights and is slow and inaccurate for convolutions on CPU.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn
from torch.nn.utils import prune

from transferlab.config import TrainConfig
from transferlab.data.split import SplitSamples
from transferlab.data.transforms import Preprocessing
from transferlab.errors import ConfigError
from transferlab.finetune import Phase

logger = logging.getLogger(__name__)

QUANTIZE_MODES = ("int8",)
# The fine-tune after pruning runs at this fraction of the run's learning rates.
FINETUNE_LR_SCALE = 0.1


def _prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def sparsity(model: nn.Module) -> float:
    """Share of zero weights over all convolution and linear layers."""
    zeros = total = 0
    for module, name in _prunable(model):
        w = getattr(module, name)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total if total else 0.0


def prune_magnitude(model: nn.Module, amount: float) -> None:
    """Zero the ``amount`` share of conv/linear weights with the smallest |w| (global L1).

    The masks stay attached (``weight_orig`` * ``weight_mask``) so a fine-tune keeps the
    pruned weights at zero; :func:`make_permanent` folds them in.
    """
    if not 0 < amount < 1:
        raise ConfigError(f"--prune {amount} must be a share of weights in (0, 1), e.g. 0.3")
    model.to(memory_format=torch.contiguous_format)  # global pruning flattens the weights
    prune.global_unstructured(_prunable(model), pruning_method=prune.L1Unstructured, amount=amount)


def make_permanent(model: nn.Module) -> None:
    for module, name in _prunable(model):
        if prune.is_pruned(module) and hasattr(module, f"{name}_orig"):
            prune.remove(module, name)


@dataclass(frozen=True)
class FinetuneConfig:
    """The recovery fine-tune after pruning; ``from_run`` takes the run's own recipe."""

    epochs: int
    lr: float = 1e-4
    batch_size: int = 32
    label_smoothing: float = 0.1
    seed: int = 0

    @classmethod
    def from_run(cls, raw: dict[str, Any], epochs: int) -> FinetuneConfig:
        train = raw.get("train") or {}
        return cls(
            epochs=epochs,
            lr=float(train.get("lr", 1e-3)) * FINETUNE_LR_SCALE,
            batch_size=int(train.get("batch_size", 32)),
            label_smoothing=float(train.get("label_smoothing", 0.1)),
            seed=int(train.get("seed", 0)),
        )

    def train_config(self) -> TrainConfig:
        """The engine's settings: AdamW (torch's default weight decay, 0.01) at a fixed LR."""
        return TrainConfig(
            strategy="full",
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            head_lr=self.lr,
            optimizer="adamw",
            weight_decay=0.01,
            scheduler="none",
            label_smoothing=self.label_smoothing,
            feature_cache=False,
            seed=self.seed,
        )


def finetune_pruned(
    model: nn.Module, split: SplitSamples, prep: Preprocessing, cfg: FinetuneConfig
) -> dict[str, Any]:
    """Recover accuracy after pruning: every layer trains on the run's train split.

    One phase of the engine's loop (:func:`transferlab.engine.fit`) at a fixed tenth of
    the run's learning rate (AdamW, the run's crop-and-flip augmentation), validated on
    the run's val split after every epoch; the best epoch's weights are kept. The masks
    stay attached, so pruned weights stay zero; checkpoints go to a temporary folder.
    """
    from transferlab.data.augment import PRESETS
    from transferlab.data.store import decode_all
    from transferlab.engine import fit

    if not split.train:
        raise ConfigError("the run has no train images to fine-tune the pruned model on")
    if not split.val:
        raise ConfigError(
            "the run's split.csv has no val images to check the pruned model's fine-tune on; "
            "export without --finetune-epochs"
        )
    train, _ = decode_all(split.train, split.classes, prep, 4096)
    val, _ = decode_all(split.val, split.classes, prep, 4096)
    phase = Phase("prune-finetune", cfg.epochs, "all", cfg.lr, cfg.lr, augment=True)
    device = next(model.parameters()).device
    with tempfile.TemporaryDirectory(prefix="transferlab-prune-") as tmp:
        settings = cfg.train_config()
        result = fit(
            model, [phase], train, val, prep, settings, PRESETS["light"], Path(tmp), device=device
        )
    model.load_state_dict(result.best_state)
    model.to(memory_format=torch.contiguous_format).eval()
    best = result.history[result.best_epoch - 1]
    return {
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "images": len(train),
        "final_loss": result.history[-1].train_loss,
        "val_images": len(val),
        "best_epoch": result.best_epoch,
        "val_accuracy": best.val_accuracy,
        "val_macro_f1": best.val_macro_f1,
    }


class _Calibration(CalibrationDataReader):
    """ONNX Runtime's calibration reader over normalised image batches."""

    def __init__(self, input_name: str, batches: Iterator[np.ndarray]) -> None:
        self.input_name, self.batches = input_name, batches

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}


def quantize_int8(source: Path, out: Path, calibration: torch.Tensor, input_name: str) -> None:
    """Static int8 quantisation of an fp32 ONNX file, calibrated on ``calibration``.

    ``calibration`` is a normalised float batch (N, 3, S, S) of real images.
    """
    batches = (c.numpy().astype(np.float32) for c in calibration.split(16))
    reader = _Calibration(input_name, batches)
    with tempfile.TemporaryDirectory(prefix="transferlab-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and graph fusion first, as ONNX Runtime recommends for quantisation.
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
