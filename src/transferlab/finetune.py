"""Which parameters train in which phase, BatchNorm modes, and parameter groups.

A phase is a span of epochs with one set of trainable parameters and one LR setting.
Strategies map to phases:

- ``scratch``: random init, everything trains.
- ``linear-probe``: backbone frozen (BatchNorm statistics too), only the head trains.
- ``top-n``: the last N layer groups + the head train (groups from the architecture).
- ``full``: pretrained init, everything trains (backbone LR = lr x backbone_lr_mult).
- ``two-stage``: ``head`` warm-up with the backbone frozen, then ``finetune`` of all
  (or the top N groups) at the lower backbone LR.

By default (``train.bn: frozen``, except ``scratch``) the backbone's BatchNorm layers stay
in inference mode with their pretrained statistics and affine while the convolutions
train: re-estimating the statistics on small batches of new data at the unfreeze undid
the head's epochs (issue 12's "unfreeze shock", measured in ``benchmarks/README.md``).

With ``train.layer_decay`` every phase that trains the backbone gives each layer group
(``models.groups``) the backbone LR times ``layer_decay ** depth`` below the head.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from timm.optim import param_groups_weight_decay
from torch import nn

from transferlab.config import TrainConfig
from transferlab.models.groups import body_groups, trainable_for_top_n


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    trainable: str  # "head" | "all" | "top-n"
    head_lr: float
    backbone_lr: float
    augment: bool
    bn: str = "train"  # "train" | "frozen" (for trainable layers; frozen layers never train BN)
    groups: int | None = None  # top-n: how many groups below the head train
    # Progressive resizing: the training image size of each epoch (the last is the model's);
    # empty: the model's size throughout. Validation always runs at the model's size.
    image_sizes: tuple[int, ...] = ()

    @property
    def train_backbone(self) -> bool:
        return self.trainable != "head"

    def image_size(self, epoch_in_phase: int, default: int) -> int:
        """The training image size of the phase's ``epoch_in_phase``-th epoch (from 0)."""
        if epoch_in_phase < len(self.image_sizes):
            return self.image_sizes[epoch_in_phase]
        return default

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "image_sizes": list(self.image_sizes)}  # as JSON reads back


def default_augment(strategy: str) -> str:
    """A linear probe defaults to no augmentation so its features are computed once."""
    return "none" if strategy == "linear-probe" else "light"


def resize_schedule(start: int, end: int, epochs: int) -> tuple[int, ...]:
    """Image sizes growing linearly from ``start`` to ``end`` over ``epochs`` epochs, the
    last at ``end`` (multiples of 8 in between); empty when there is nothing to grow."""
    if epochs < 2 or start >= end:
        return ()
    step = (end - start) / (epochs - 1)
    sizes = [max(16, round((start + step * i) / 8) * 8) for i in range(epochs - 1)]
    return (*[min(s, end) for s in sizes], end)


def _resized(phases: list[Phase], cfg: TrainConfig, image_size: int | None) -> list[Phase]:
    if cfg.resize_from is None or image_size is None:
        return phases
    return [
        replace(p, image_sizes=resize_schedule(cfg.resize_from, image_size, p.epochs))
        if p.train_backbone
        else p
        for p in phases
    ]


def plan_phases(cfg: TrainConfig, augment: bool, image_size: int | None = None) -> list[Phase]:
    """The phases of ``cfg.strategy``; phases with zero epochs are left out.

    With ``cfg.resize_from`` and the model's ``image_size``, phases that train the
    backbone grow their training image size epoch by epoch (progressive resizing)."""
    return _resized(_strategy_phases(cfg, augment), cfg, image_size)


def _strategy_phases(cfg: TrainConfig, augment: bool) -> list[Phase]:
    backbone_lr = cfg.lr * cfg.backbone_lr_mult
    top = "top-n" if cfg.trainable_groups else "all"
    s = cfg.strategy
    if s == "linear-probe":
        phases = [Phase("head", cfg.epochs, "head", cfg.lr, 0.0, augment, "frozen")]
    elif s == "top-n":
        phases = [
            Phase(
                "top-n",
                cfg.epochs,
                "top-n",
                cfg.lr,
                backbone_lr,
                augment,
                cfg.bn,
                cfg.trainable_groups,
            )
        ]
    elif s in ("full", "scratch"):
        lr = cfg.lr if s == "scratch" else backbone_lr
        phases = [Phase(s, cfg.epochs, "all", cfg.lr, lr, augment, cfg.bn)]
    else:  # two-stage
        phases = [
            Phase("head", cfg.head_epochs, "head", cfg.head_lr, 0.0, False, "frozen"),
            Phase(
                "finetune",
                cfg.epochs,
                top,
                cfg.lr,
                backbone_lr,
                augment,
                cfg.bn,
                cfg.trainable_groups,
            ),
        ]
    return [p for p in phases if p.epochs > 0]


def classifier(model: nn.Module) -> nn.Module:
    head = model.get_classifier()  # type: ignore[operator]
    if not isinstance(head, nn.Module):
        raise TypeError(f"{type(model).__name__} has no classifier module")
    return head


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def apply_phase(model: nn.Module, phase: Phase) -> None:
    """Set ``requires_grad`` for ``phase``. The head always trains."""
    head_ids = {id(p) for p in classifier(model).parameters()}
    if phase.trainable == "top-n":
        names = trainable_for_top_n(model, phase.groups or 0)
    else:
        names = {n for n, _ in model.named_parameters()} if phase.trainable == "all" else set()
    for name, p in model.named_parameters():
        p.requires_grad_(name in names or id(p) in head_ids)
    if phase.bn == "frozen":
        for module in model.modules():
            if _is_norm(module) and not any(id(p) in head_ids for p in module.parameters()):
                for p in module.parameters(recurse=False):
                    p.requires_grad_(False)


def set_train_mode(model: nn.Module, phase: Phase) -> None:
    """``model.train()``, except BatchNorm layers that must keep their statistics.

    BN stays in inference mode when the phase freezes BN or when the layer has no
    trainable parameters (it sits in a frozen part of the network).
    """
    model.train()
    head = set(classifier(model).modules())
    for module in model.modules():
        if (
            _is_norm(module)
            and module not in head
            and (phase.bn == "frozen" or not any(p.requires_grad for p in module.parameters()))
        ):
            module.eval()


def batchnorm_trains(model: nn.Module, phase: Phase) -> bool:
    """Whether a BatchNorm layer updates its statistics in ``phase`` (its parameters must
    already be set by :func:`apply_phase`): such a layer cannot train on a batch of one.
    Every module's train/eval mode is put back as it was."""
    modes = [(m, m.training) for m in model.modules()]
    set_train_mode(model, phase)
    trains = any(_is_norm(m) and m.training for m in model.modules())
    for module, training in modes:
        module.training = training
    return trains


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _decayed_ids(model: nn.Module, weight_decay: float) -> set[int]:
    """Parameters that get weight decay, by timm's rule: not biases, norms or other 1-D
    tensors, nor what the model lists in ``no_weight_decay()`` (e.g. position embeddings)."""
    skip = getattr(model, "no_weight_decay", None)
    groups = param_groups_weight_decay(
        model, weight_decay, no_weight_decay_list=skip() if callable(skip) else ()
    )
    return {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}


def _layer_scales(model: nn.Module, layer_decay: float) -> dict[str, tuple[int, float]]:
    """Parameter name -> (layer group, LR scale): ``layer_decay ** depth`` below the head.

    timm's ``param_groups_layer_decay`` computes the same scale, but over its own fine
    grouping and without a separate head LR; here the groups are
    :func:`~transferlab.models.groups.layer_groups` (the ones ``--trainable-groups`` counts).
    """
    body = body_groups(model)  # the head's group comes after these, with scale 1
    return {name: (i, layer_decay ** (len(body) - i)) for i, g in enumerate(body) for name in g}


def param_groups(
    model: nn.Module, phase: Phase, weight_decay: float, layer_decay: float | None = None
) -> list[dict[str, Any]]:
    """Optimizer groups of the trainable parameters: head LR for the classifier, backbone
    LR (times ``layer_decay ** depth`` below the head, if set) for the rest; weight decay
    only on what timm decays (see :func:`_decayed_ids`)."""
    head_ids = {id(p) for p in classifier(model).parameters()}
    decayed = _decayed_ids(model, weight_decay)
    scales = _layer_scales(model, layer_decay) if layer_decay is not None else {}
    top = max((i for i, _ in scales.values()), default=-1) + 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        in_head = id(p) in head_ids
        decay = id(p) in decayed
        # Without layer decay every backbone parameter is "layer" 0 and the head 1, which
        # keeps the groups (and old checkpoints' optimizer states) as they always were.
        layer, scale = (top, 1.0) if in_head else scales.get(name, (0, 1.0))
        key = (layer if scales else int(in_head), decay)
        if key not in groups:
            part = "head" if in_head else ("backbone" if not scales else f"layer{layer}")
            groups[key] = {
                "params": [],
                "lr": (phase.head_lr if in_head else phase.backbone_lr * scale),
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{part}{'' if decay else '_no_decay'}",
            }
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]
