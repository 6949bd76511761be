"""The learning-rate range test (Smith 2015, fastai's ``lr_find``), with a robust suggestion.

The test (:func:`lr_range_test`) trains the whole network for ``steps`` mini-batches while
the learning rate grows exponentially from ``start_lr`` to ``end_lr``, records the loss,
smooths it with a bias-corrected exponential moving average and stops once the smoothed
loss exceeds ``divergence`` (4) times its minimum, or turns NaN/inf. It is no loop of its
own: the engine's :class:`~transferlab.engine.Stepper` steps, and a callback raises the LR
after each step and stops it at divergence. On a run's config (:func:`find_lr`) the
batches are the engine's training batches, augmented as the run would be. The model,
optimizer and RNG state are put back afterwards.

The suggestion (:func:`suggest_lr`, a pure function of the curve) never recommends the
divergence point. The rule:

1. only the curve up to the minimum of the smoothed loss counts (``lr_min`` is its LR);
   the first 10 points (at most a fifth of the curve) are left out of both steps, as the
   moving average has seen too few batches there to be trusted;
2. candidate: the LR where the smoothed loss falls fastest against ``log10(lr)`` within
   that part, the slope taken across half a decade of LR (a central difference over
   +-1/4 decade) so that batch-to-batch jitter does not win;
3. the suggestion is that LR clamped to at most ``lr_min / 10`` (``lr_min / 10`` when the
   loss never fell), one decade below the minimum, which itself lies below divergence.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferlab.config import RunConfig
from transferlab.data.augment import resolve_augment
from transferlab.engine import Callback, Stepper, StopTraining, Trainer, resolve_device
from transferlab.errors import ConfigError
from transferlab.finetune import Phase, apply_phase, default_augment, param_groups
from transferlab.optim import build_optimizer
from transferlab.runtime import Runtime
from transferlab.setup import resolve_config, setup_run

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class LRSuggestion:
    lr: float  # the recommendation
    min_loss_lr: float  # LR at the minimum of the smoothed loss
    steepest_lr: float | None  # LR of the steepest descent before the minimum, if any
    diverged_lr: float | None  # first LR whose smoothed loss exceeded divergence x minimum
    reason: str


@dataclass(frozen=True)
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # raw mini-batch losses
    smoothed: list[float]
    suggestion: LRSuggestion

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"step": i, "lr": lr, "loss": loss, "smoothed_loss": s}
            for i, (lr, loss, s) in enumerate(
                zip(self.lrs, self.losses, self.smoothed, strict=True)
            )
        ]


def check_range(start_lr: float, end_lr: float, steps: int) -> None:
    if not start_lr > 0:
        raise ConfigError(f"--start-lr must be > 0, got {start_lr}")
    if not end_lr > start_lr:
        raise ConfigError(f"--end-lr ({end_lr}) must be larger than --start-lr ({start_lr})")
    if steps < 5:
        raise ConfigError(f"--steps must be at least 5 for a usable curve, got {steps}")


def lr_schedule(start_lr: float, end_lr: float, steps: int) -> list[float]:
    """``steps`` learning rates, evenly spaced in log space from ``start_lr`` to ``end_lr``."""
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / max(1, steps - 1)) for i in range(steps)]


def smooth_losses(losses: list[float], beta: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average (as fastai's recorder)."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def _finite_prefix(values: list[float]) -> int:
    return next((i for i, v in enumerate(values) if not math.isfinite(v)), len(values))


def _diverged_at(lrs: list[float], smoothed: list[float], divergence: float) -> float | None:
    best = math.inf
    for lr, s in zip(lrs, smoothed, strict=True):
        if not math.isfinite(s) or s > divergence * best:
            return lr
        best = min(best, s)
    return None


def _half_window(xs: np.ndarray, decades: float = 0.25) -> int:
    """Points in ``decades`` of log10(lr) at the curve's mean spacing (at least 1)."""
    if len(xs) < 2:
        return 1
    step = (xs[-1] - xs[0]) / (len(xs) - 1)
    return max(1, round(decades / step)) if step > 0 else 1


def suggest_lr(
    lrs: list[float], smoothed: list[float], divergence: float = 4.0, skip_start: int = 10
) -> LRSuggestion:
    """The suggestion from a (smoothed) loss curve; the rule is in the module docstring.

    The first ``skip_start`` points (at most a fifth of the curve), where the moving
    average has seen too few batches to be trusted, are neither minimum nor steepest point.
    """
    if len(lrs) != len(smoothed):
        raise ValueError("lrs and smoothed must have the same length")
    n = _finite_prefix(smoothed)
    if n == 0:
        raise ConfigError("the loss was not finite from the first step; lower --start-lr")
    diverged = _diverged_at(lrs, smoothed, divergence)
    xs, ys = np.log10(np.asarray(lrs[:n])), np.asarray(smoothed[:n])
    skip = min(skip_start, n // 5)
    i_min = skip + int(np.argmin(ys[skip:]))
    lr_min, cap = float(lrs[i_min]), float(lrs[i_min]) / 10
    steepest = None
    half = min(_half_window(xs), (i_min - skip) // 2)
    if half >= 1:
        head_x, head_y = xs[skip : i_min + 1], ys[skip : i_min + 1]
        slopes = (head_y[2 * half :] - head_y[: -2 * half]) / (
            head_x[2 * half :] - head_x[: -2 * half]
        )
        k = int(np.argmin(slopes))
        if slopes[k] < 0:
            steepest = float(lrs[skip + k + half])
    if steepest is None:
        reason = "the loss did not fall before its minimum: minimum LR / 10"
        lr = cap
    elif steepest <= cap:
        reason = "steepest descent of the smoothed loss"
        lr = steepest
    else:
        reason = "steepest descent was too close to the minimum: minimum LR / 10"
        lr = cap
    if i_min == n - 1 and diverged is None:
        reason += " (the loss was still falling at --end-lr; a higher --end-lr may help)"
    return LRSuggestion(lr, lr_min, steepest, diverged, reason)


def _set_lrs(opt: torch.optim.Optimizer, lr: float, ratios: list[float]) -> None:
    for group, ratio in zip(opt.param_groups, ratios, strict=True):
        group["lr"] = lr * ratio


class _RangeTest(Callback):
    """Records each step's loss, raises the LR for the next one, stops at divergence."""

    def __init__(
        self, opt: torch.optim.Optimizer, schedule: list[float], beta: float, divergence: float
    ) -> None:
        self.opt, self.schedule, self.beta, self.divergence = opt, schedule, beta, divergence
        top = max(g["lr"] for g in opt.param_groups)
        self.ratios = [g["lr"] / top if top > 0 else 1.0 for g in opt.param_groups]
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.avg, self.best = 0.0, math.inf
        _set_lrs(opt, schedule[0], self.ratios)

    def on_batch_end(self, loss: float) -> None:
        step, lr = len(self.lrs), self.schedule[len(self.lrs)]
        self.lrs.append(lr)
        self.losses.append(loss)
        if not math.isfinite(loss):
            logger.info("loss became %s at lr %.3g; stopping", loss, lr)
            raise StopTraining
        self.avg = self.beta * self.avg + (1 - self.beta) * loss
        smoothed = self.avg / (1 - self.beta ** (step + 1))
        self.best = min(self.best, smoothed)
        if smoothed > self.divergence * self.best:
            logger.info(
                "smoothed loss passed %gx its minimum at lr %.3g; stopping", self.divergence, lr
            )
            raise StopTraining
        if step + 1 == len(self.schedule):
            raise StopTraining
        _set_lrs(self.opt, self.schedule[step + 1], self.ratios)


@dataclass
class _Saved:
    model: dict[str, torch.Tensor]
    flags: dict[str, bool]
    training: bool
    optimizer: dict[str, Any] | None
    rng: torch.Tensor

    @classmethod
    def take(cls, model: nn.Module, opt: torch.optim.Optimizer | None) -> _Saved:
        return cls(
            model={k: v.detach().clone() for k, v in model.state_dict().items()},
            flags={n: p.requires_grad for n, p in model.named_parameters()},
            training=model.training,
            optimizer=copy.deepcopy(opt.state_dict()) if opt is not None else None,
            rng=torch.get_rng_state(),
        )

    def restore(self, model: nn.Module, opt: torch.optim.Optimizer | None) -> None:
        model.load_state_dict(self.model)
        for name, p in model.named_parameters():
            p.requires_grad_(self.flags[name])
        model.train(self.training)
        if opt is not None and self.optimizer is not None:
            opt.load_state_dict(self.optimizer)
        torch.set_rng_state(self.rng)


def lr_range_test(
    model: nn.Module,
    batches: Iterable[Batch],
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    optimizer: torch.optim.Optimizer | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    beta: float = 0.9,
    divergence: float = 4.0,
    precision: str = "fp32",
) -> LRFindResult:
    """Run the range test on ``batches`` (inputs and targets, at least ``steps`` of them).

    Every parameter trains; without ``optimizer`` it is AdamW without weight decay. A
    given optimizer keeps the ratios between its parameter groups' learning rates (the
    largest group follows the schedule). Model, optimizer and RNG state are restored.
    """
    check_range(start_lr, end_lr, steps)
    device = next(model.parameters()).device
    saved = _Saved.take(model, optimizer)
    try:
        for p in model.parameters():
            p.requires_grad_(True)
        opt = optimizer or torch.optim.AdamW(model.parameters(), lr=start_lr, weight_decay=0.0)
        model.train()
        curve = _RangeTest(opt, lr_schedule(start_lr, end_lr, steps), beta, divergence)
        loss = loss_fn or nn.CrossEntropyLoss()
        Stepper(opt, loss, Runtime(device), precision, callbacks=[curve]).run(model, batches)
    finally:
        saved.restore(model, optimizer)
    smoothed = smooth_losses(curve.losses, beta)
    return LRFindResult(
        curve.lrs, curve.losses, smoothed, suggest_lr(curve.lrs, smoothed, divergence)
    )


def find_lr(
    cfg: RunConfig, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100
) -> tuple[LRFindResult, dict[str, Any]]:
    """The range test on ``cfg``'s train split, model (head, kwargs), optimizer, loss and
    augmentation: the batches are the ones training would see, one LR for every layer.

    Returns the result and a summary of what was tested.
    """
    check_range(start_lr, end_lr, steps)
    cfg = resolve_config(cfg)
    setup = setup_run(cfg)
    spec = resolve_augment(cfg.augment, default_augment(cfg.train.strategy))
    trainer = Trainer(
        setup.model,
        setup.sets["train"],
        setup.sets["val"],
        setup.prep,
        cfg.train,
        spec,
        resolve_device(cfg.train.device),
    )
    phase = Phase("lr-find", 1, "all", start_lr, start_lr, spec.enabled, cfg.train.bn)
    apply_phase(setup.model, phase)
    groups = param_groups(setup.model, phase, cfg.train.weight_decay)
    opt = build_optimizer(cfg.train, groups)
    result = lr_range_test(
        setup.model,
        trainer.endless_batches(phase),
        start_lr,
        end_lr,
        steps,
        optimizer=opt,
        loss_fn=trainer.loss_fn,
        precision=cfg.train.precision,
    )
    context = {
        "model": cfg.model.name,
        "weights": setup.source,
        "optimizer": cfg.train.optimizer,
        "image_size": setup.prep.input_size,
        "batch_size": cfg.train.batch_size,
        "train_images": len(setup.sets["train"]),
    }
    return result, context


def write_csv(result: LRFindResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["step", "lr", "loss", "smoothed_loss"])
        writer.writeheader()
        for row in result.rows():
            writer.writerow({k: f"{v:.8g}" if isinstance(v, float) else v for k, v in row.items()})
    return path


def write_plot(result: LRFindResult, path: Path, title: str = "LR range test") -> Path:
    """Loss against learning rate (log axis), the suggestion and the minimum marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    s = result.suggestion
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        ax.plot(result.lrs, result.losses, color="0.75", lw=1, label="mini-batch loss")
        ax.plot(result.lrs, result.smoothed, color="C0", lw=2, label="smoothed loss")
        ax.axvline(s.lr, color="C2", ls="--", label=f"suggestion {s.lr:.2e}")
        ax.axvline(s.min_loss_lr, color="C1", ls=":", label=f"minimum {s.min_loss_lr:.2e}")
        if s.diverged_lr is not None:
            ax.axvline(s.diverged_lr, color="C3", ls=":", label=f"diverged {s.diverged_lr:.2e}")
        finite = [v for v in result.smoothed if math.isfinite(v)]
        if finite:
            low, first = min(finite), finite[0]
            ax.set_ylim(low - 0.1 * abs(low), max(first, low) * 1.5 + 1e-9)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path
