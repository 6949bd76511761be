"""LR schedules by name: the Stanford Cars step schedule, one-cycle, plateau, warm-up."""

from __future__ import annotations

import itertools

import pytest
import torch

from transferlab.config import TrainConfig
from transferlab.optim import Schedule, build_optimizer


def _lrs(
    cfg: TrainConfig, epochs: int, per_epoch: int, metrics: list[float] | None = None
) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer(cfg, [{"params": [param], "lr": cfg.lr}])
    sched = Schedule(cfg, opt, epochs, per_epoch)
    seen = []
    for epoch in range(epochs):
        for _ in range(per_epoch):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step_batch()
        sched.step_epoch(metrics[epoch] if metrics else 0.0)
    return seen


def test_multistep_decays_at_the_milestone_epochs() -> None:
    cfg = TrainConfig(lr=0.1, scheduler="multistep", milestones=(2, 4), gamma=0.1)
    lrs = _lrs(cfg, epochs=5, per_epoch=2)
    assert lrs[::2] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])


def test_cosine_with_warmup_ramps_then_decays_to_zero() -> None:
    cfg = TrainConfig(lr=1.0, scheduler="cosine", lr_warmup_epochs=1)
    lrs = _lrs(cfg, epochs=4, per_epoch=4)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[-1] < 0.05 and all(a >= b for a, b in itertools.pairwise(lrs[4:]))


def test_onecycle_peaks_at_lr_in_the_middle() -> None:
    lrs = _lrs(TrainConfig(lr=0.5, scheduler="onecycle"), epochs=2, per_epoch=10)
    assert max(lrs) == pytest.approx(0.5, rel=1e-3)
    assert lrs[0] < 0.1 and lrs[-1] < 0.01


def test_plateau_decays_after_patience_epochs_without_improvement() -> None:
    cfg = TrainConfig(lr=1.0, scheduler="plateau", plateau_patience=1, gamma=0.5)
    lrs = _lrs(cfg, epochs=5, per_epoch=1, metrics=[0.5, 0.6, 0.6, 0.6, 0.6])
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.5])


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_each_optimizer_reduces_a_simple_loss(name: str) -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    cfg = TrainConfig(optimizer=name, lr=0.05, nesterov=name == "sgd")
    opt = build_optimizer(cfg, [{"params": [w], "lr": cfg.lr, "weight_decay": 0.0}])
    first = float((w**2).sum().detach())
    for _ in range(50):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    assert float((w**2).sum().detach()) < first / 2
