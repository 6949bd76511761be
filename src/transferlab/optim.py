"""Optimizers by name (timm's factory) and LR schedules, built per phase from the config.

Optimizers come from ``timm.optim.create_optimizer_v2`` over the parameter groups of
:func:`transferlab.finetune.param_groups` (head / backbone LR, layer-wise LR decay, no
weight decay on biases and norms). Two settings are passed explicitly so the optimizers
stay the ones of ``torch.optim`` as before: ``nesterov`` for SGD (timm's ``sgd`` defaults
to Nesterov) and RMSprop's ``alpha=0.99`` (timm's registry defaults to TensorFlow's 0.9).

Schedules stay :class:`Schedule` (LambdaLR / OneCycleLR), not timm's schedulers. Why:
timm has no one-cycle schedule; its schedulers are driven by the caller's epoch and
update counters (``step(epoch)``, ``step_update(num_updates)``) and would replace one
stepping interface with two; and a LambdaLR's state dict restores the exact step, which
the bit-exact resume test checks. The layer-decay scale is therefore baked into each
group's ``lr`` (timm's ``lr_scale`` key is read only by timm's schedulers).

Every schedule is stepped once per batch (``step_batch``) and once per epoch
(``step_epoch``); each kind reacts to the one it needs. Epoch-based decays
(step, multistep) count epochs within the phase, so the Stanford Cars manual
schedule is ``scheduler: multistep, milestones: [10, 20], gamma: 0.1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from timm.optim import create_optimizer_v2
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR

from transferlab.config import TrainConfig


def build_optimizer(cfg: TrainConfig, groups: list[dict[str, Any]]) -> Optimizer:
    """``cfg.optimizer`` over ``groups`` (each group carries its own lr and weight decay)."""
    extra: dict[str, Any] = {}
    if cfg.optimizer == "sgd":
        extra["nesterov"] = cfg.nesterov
    elif cfg.optimizer == "rmsprop":
        extra["alpha"] = 0.99  # torch's default, as before; timm's registry says 0.9
    return create_optimizer_v2(
        groups, opt=cfg.optimizer, lr=cfg.lr, weight_decay=0.0, momentum=cfg.momentum, **extra
    )


def is_improvement(monitor: str, value: float, best: float | None, min_delta: float) -> bool:
    """Strictly better than ``best`` by more than ``min_delta``: a tie is no improvement,
    so patience runs out when a small validation set repeats its metric exactly."""
    if best is None:
        return True
    return value < best - min_delta if monitor == "val_loss" else value > best + min_delta


def _factor(cfg: TrainConfig, total: int, per_epoch: int) -> Callable[[int], float]:
    """LR multiplier at optimizer step ``step`` (0-based) for the LambdaLR kinds."""
    warmup = round(cfg.lr_warmup_epochs * per_epoch)

    def factor(step: int) -> float:
        ramp = (step + 1) / warmup if step < warmup else 1.0
        epoch = step // max(1, per_epoch)
        if cfg.scheduler == "cosine":
            progress = (step - warmup) / max(1, total - warmup) if step >= warmup else 0.0
            return ramp * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if cfg.scheduler == "step":
            return ramp * cfg.gamma ** (epoch // max(1, cfg.step_size))
        if cfg.scheduler == "multistep":
            return ramp * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
        return ramp  # none, plateau

    return factor


class Schedule:
    """One phase's LR schedule with a uniform batch/epoch stepping interface.

    ``plateau`` multiplies the LR by ``gamma`` after ``plateau_patience`` epochs without
    improvement of the monitored metric; the scale lives inside the LambdaLR factor so the
    per-batch warm-up and the plateau decay never overwrite each other.
    """

    def __init__(self, cfg: TrainConfig, opt: Optimizer, epochs: int, per_epoch: int) -> None:
        self.kind = cfg.scheduler
        self.cfg = cfg
        self.scale = 1.0
        self.best: float | None = None
        self.bad_epochs = 0
        total = max(1, epochs * per_epoch)
        self.batch: LambdaLR | OneCycleLR
        if self.kind == "onecycle":
            max_lrs = [g["lr"] for g in opt.param_groups]
            self.batch = OneCycleLR(opt, max_lr=max_lrs, total_steps=total)
        else:
            self.base = _factor(cfg, total, per_epoch)
            self.batch = LambdaLR(opt, lambda step: self.base(step) * self.scale)
        self.opt = opt

    def step_batch(self) -> None:
        self.batch.step()

    def step_epoch(self, metric: float) -> None:
        if self.kind != "plateau":
            return
        if is_improvement(self.cfg.monitor, metric, self.best, self.cfg.min_delta):
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.cfg.plateau_patience:
                self.scale *= self.cfg.gamma
                self.bad_epochs = 0
                # Apply now, not at the next batch step.
                factor = self.base(self.batch.last_epoch) * self.scale
                for group, base_lr in zip(self.opt.param_groups, self.batch.base_lrs, strict=True):
                    group["lr"] = base_lr * factor

    def state_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch.state_dict(),
            "scale": self.scale,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch.load_state_dict(state["batch"])
        self.scale, self.best, self.bad_epochs = state["scale"], state["best"], state["bad_epochs"]
