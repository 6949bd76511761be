"""Optimizers and parameter groups (head/backbone LR, layer decay, no decay on norms) and
LR schedules by name: the Stanford Cars step schedule, one-cycle, plateau, warm-up."""

from __future__ import annotations

import itertools

import pytest
import torch

from transferlab.config import TrainConfig
from transferlab.finetune import Phase, apply_phase, param_groups
from transferlab.models.groups import body_groups, head_parameter_names
from transferlab.models.registry import create_model
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


def test_plateau_counts_only_improvements_larger_than_min_delta() -> None:
    cfg = TrainConfig(lr=1.0, scheduler="plateau", plateau_patience=1, gamma=0.5, min_delta=0.1)
    lrs = _lrs(cfg, epochs=4, per_epoch=1, metrics=[0.5, 0.55, 0.58, 0.6])
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.5])


def _groups(model: torch.nn.Module, layer_decay: float | None) -> list[dict]:
    phase = Phase("finetune", 1, "all", head_lr=1e-2, backbone_lr=1e-3, augment=False)
    apply_phase(model, phase)
    cfg = TrainConfig(weight_decay=0.05, layer_decay=layer_decay)
    return build_optimizer(cfg, param_groups(model, phase, 0.05, layer_decay)).param_groups


def test_groups_split_head_and_backbone_and_skip_decay_on_biases_and_norms() -> None:
    model, _ = create_model("tf_efficientnet_lite0", 3, "none")
    groups = _groups(model, None)
    assert [g["name"] for g in groups] == ["backbone_no_decay", "backbone", "head_no_decay", "head"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-3, 1e-2, 1e-2])
    assert [g["weight_decay"] for g in groups] == [0.0, 0.05, 0.0, 0.05]
    assert all(p.ndim == 1 for g in groups if not g["weight_decay"] for p in g["params"])
    norms = {
        id(p)
        for m in model.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
        for p in m.parameters()
    }
    assert norms <= {id(p) for g in groups if not g["weight_decay"] for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_layer_decay_scales_each_layer_group_below_the_head() -> None:
    model, _ = create_model("tf_efficientnet_lite0", 3, "none")
    body = body_groups(model)
    groups = _groups(model, 0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    for depth, names in enumerate(reversed(body), start=1):
        assert sorted({lr_of[id(params[n])] for n in names}) == pytest.approx([1e-3 * 0.5**depth])
    assert {lr_of[id(params[n])] for n in head_parameter_names(model)} == {1e-2}
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    assert all((p.ndim > 1) == (id(p) in decayed) for p in model.parameters())


def test_layer_decay_groups_only_what_trains_in_top_n() -> None:
    model, _ = create_model("convnet3", 3, "none")
    phase = Phase("top-n", 1, "top-n", 1e-2, 1e-3, augment=False, groups=1)
    apply_phase(model, phase)
    groups = param_groups(model, phase, 0.0, 0.5)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable
    assert sorted({g["lr"] for g in groups}) == pytest.approx([5e-4, 1e-2])
