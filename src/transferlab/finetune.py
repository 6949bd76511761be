"""Which parameters train in which phase, and at what learning rate.

A phase is a span of epochs with one set of trainable parameters. The default
``two-stage`` strategy is: ``head`` (backbone frozen, BatchNorm in inference mode,
features cached) then ``finetune`` (everything trains, backbone at a lower LR).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from transferlab.config import TrainConfig


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    train_backbone: bool
    head_lr: float
    backbone_lr: float
    augment: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_phases(cfg: TrainConfig) -> list[Phase]:
    """The phases of ``cfg.strategy``; phases with zero epochs are left out."""
    phases = [
        Phase("head", cfg.warmup_epochs, False, cfg.warmup_lr, 0.0, augment=False),
        Phase(
            "finetune",
            cfg.epochs,
            True,
            cfg.lr,
            cfg.lr * cfg.backbone_lr_mult,
            augment=cfg.augment != "none",
        ),
    ]
    return [p for p in phases if p.epochs > 0]


def classifier(model: nn.Module) -> nn.Module:
    head = model.get_classifier()  # type: ignore[operator]
    if not isinstance(head, nn.Module):
        raise TypeError(f"{type(model).__name__} has no classifier module")
    return head


def set_requires_grad(module: nn.Module, value: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(value)


def apply_phase(model: nn.Module, phase: Phase) -> None:
    """Set ``requires_grad`` for ``phase``: the head always trains, the backbone if asked."""
    set_requires_grad(model, phase.train_backbone)
    set_requires_grad(classifier(model), True)


def param_groups(model: nn.Module, phase: Phase, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: head / backbone LR, no weight decay on biases and norm parameters."""
    head_ids = {id(p) for p in classifier(model).parameters()}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        part = "head" if id(p) in head_ids else "backbone"
        groups.setdefault((part, p.ndim > 1), []).append(p)
    lrs = {"head": phase.head_lr, "backbone": phase.backbone_lr}
    return [
        {
            "params": params,
            "lr": lrs[part],
            "weight_decay": weight_decay if decay else 0.0,
            "name": f"{part}{'' if decay else '_no_decay'}",
        }
        for (part, decay), params in sorted(groups.items())
    ]
