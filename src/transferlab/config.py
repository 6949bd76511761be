"""Frozen configuration dataclasses, built once at the edge and saved into every run.

A run is fully described by :class:`RunConfig`; ``config.yaml`` in a run folder is
``RunConfig.to_dict()`` and can be fed back with ``--config``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from transferlab.errors import ConfigError

logger = logging.getLogger(__name__)

STRATEGIES = ("two-stage", "scratch", "linear-probe", "top-n", "full")
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")
SCHEDULERS = ("cosine", "none", "step", "multistep", "onecycle", "plateau")
AUGMENTS = ("none", "light", "strong")
PRECISIONS = ("fp32", "bf16")
BN_MODES = ("train", "frozen")
HEADS = ("linear", "mlp")
MONITORS = ("val_macro_f1", "val_accuracy", "val_loss")
SAMPLERS = ("random", "balanced")
CLASS_WEIGHTS = ("none", "auto")


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are split."""

    path: str = ""
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_file: str | None = None
    # Decode every image once into memory (uint8) when it fits this budget;
    # above it, images are decoded from disk each epoch.
    memory_cache_mb: int = 4096
    num_workers: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """The backbone, its weights and its input size."""

    name: str = "tf_efficientnet_lite0"
    weights: str = "imagenet"
    image_size: int | None = None  # None: the backbone's own pretrained input size
    drop_rate: float = 0.2  # dropout before the classifier
    head: str = "linear"  # linear | mlp
    hidden_units: tuple[int, ...] = (1024, 512)  # mlp head: hidden layer widths
    head_dropout: float = 0.5  # mlp head: dropout after each hidden layer
    head_bn: bool = True  # mlp head: BatchNorm after each hidden linear layer
    # Architecture keyword arguments (e.g. stride, kernel_size, width for the AlexNets).
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation; ``preset`` sets every knob left as None."""

    preset: str | None = None  # none | light | strong; None: the strategy's default
    hflip: float | None = None  # probability of a horizontal flip
    scale_min: float | None = None  # random resized crop: smallest area fraction
    rotation: float | None = None  # max degrees of random rotation
    color_jitter: float | None = None  # brightness/contrast/saturation strength
    randaugment: int | None = None  # RandAugment ops per image (0: off)
    randaugment_magnitude: int | None = None
    mixup: float | None = None  # mixup alpha (0: off)
    cutmix: float | None = None  # cutmix alpha (0: off)


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe. The default is a two-stage fine-tune for small datasets."""

    strategy: str = "two-stage"
    epochs: int = 4  # main epochs (two-stage: after the head warm-up)
    head_epochs: int = 5  # two-stage: head-only epochs first (features cached); was warmup_epochs
    trainable_groups: int | None = None  # top-n (and two-stage): last N layer groups train
    batch_size: int = 32
    lr: float = 1e-3  # learning rate of the head; the backbone gets lr * backbone_lr_mult
    head_lr: float = 3e-3  # learning rate of the head during the head-only epochs; was warmup_lr
    backbone_lr_mult: float = 0.3
    bn: str = "train"  # train | frozen: BatchNorm of trainable layers kept in inference mode
    weight_decay: float = 0.02
    # Layer-wise LR decay (timm's layer_decay): each layer group below the top gets this
    # factor more; None: off. Applies to phases that train the backbone.
    layer_decay: float | None = None
    optimizer: str = "adamw"
    momentum: float = 0.9  # sgd, rmsprop
    nesterov: bool = False  # sgd
    scheduler: str = "cosine"
    lr_warmup_epochs: float = 0.0  # linear LR warm-up at the start of each phase
    step_size: int = 1  # step scheduler: epochs between decays
    milestones: tuple[int, ...] = ()  # multistep scheduler: epochs (within the phase) to decay at
    gamma: float = 0.1  # step / multistep / plateau decay factor
    plateau_patience: int = 1
    label_smoothing: float = 0.1
    class_weights: str = "none"  # none | auto (inverse class frequency)
    sampler: str = "random"  # random | balanced (each class equally likely per draw)
    monitor: str = "val_macro_f1"  # best checkpoint and early stopping metric
    early_stopping: int | None = None  # patience in epochs (per phase); None: off
    min_delta: float = 0.0  # an epoch improves only if it beats the best by more than this
    feature_cache: bool = True  # frozen backbone + no augmentation: compute features once
    feature_cache_dir: str | None = None  # keep them on disk for later runs (compare: on)
    init_from: str | None = None  # start from these weights (bundle, run or checkpoint)
    precision: str = "fp32"
    channels_last: bool = True  # NHWC memory format: faster convolutions (1.6x a CPU epoch)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        return {k: plain(v) for k, v in dataclasses.asdict(self).items()}

    def to_yaml(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    def validate(self) -> RunConfig:
        _validate(self)
        return self


_T = TypeVar("_T")
_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "augment": AugmentConfig,
}


def _coerce(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """YAML gives lists where the dataclass keeps tuples (hashable, frozen)."""
    out = dict(values)
    for f in fields(cls):
        if f.name in out and isinstance(out[f.name], list):
            out[f.name] = tuple(out[f.name])
    return out


def _build(cls: type[_T], values: Mapping[str, Any], where: str) -> _T:
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {where}.{unknown[0]}; known keys in '{where}': {', '.join(sorted(known))}"
        )
    try:
        return cls(**_coerce(cls, dict(values)))
    except TypeError as exc:
        raise ConfigError(f"bad value in config section '{where}': {exc}") from exc


# Keys renamed since release; old config.yaml files still load, with a warning.
RENAMED_KEYS = {"train.warmup_epochs": "train.head_epochs", "train.warmup_lr": "train.head_lr"}


def _rename_old_keys(section: str, values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for old, new in RENAMED_KEYS.items():
        old_section, _, old_key = old.partition(".")
        new_key = new.partition(".")[2]
        if old_section == section and old_key in out:
            logger.warning("config key %s is now %s; please rename it", old, new)
            value = out.pop(old_key)
            out.setdefault(new_key, value)
    return out


def from_dict(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Build a config from nested mappings; ``overrides`` uses dotted keys (``train.lr``)."""
    merged: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for section, values in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"unknown config section '{section}'; use one of: {', '.join(_SECTIONS)}"
            )
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"config section '{section}' must be a mapping of key: value")
        merged[section].update(_rename_old_keys(section, dict(values)))
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if value is not None:
            merged[section][key] = value
    cfg = RunConfig(**{name: _build(cls, merged[name], name) for name, cls in _SECTIONS.items()})
    return cfg.validate()


def load_yaml(
    path: Path, what: str = "config file", holds: str = "sections data/model/train"
) -> dict[str, Any]:
    """Read a YAML file into a mapping, with errors that name the file and what it must hold."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc.__class__.__name__}); fix it") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping with {holds}")
    return raw


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _validate(cfg: RunConfig) -> None:
    d, m, t = cfg.data, cfg.model, cfg.train
    _check(0 <= d.val_fraction < 1, "--val-fraction must be in [0, 1)")
    _check(0 <= d.test_fraction < 1, "--test-fraction must be in [0, 1)")
    _check(
        d.val_fraction + d.test_fraction < 1,
        "--val-fraction plus --test-fraction must leave images for training (sum < 1)",
    )
    _check(m.image_size is None or m.image_size >= 16, "--image-size must be at least 16")
    _check(0 <= m.drop_rate < 1, "model.drop_rate must be in [0, 1)")
    _check(t.epochs >= 0 and t.head_epochs >= 0, "--epochs must be >= 0")
    _check(
        t.epochs > 0 or (t.strategy == "two-stage" and t.head_epochs > 0),
        "--epochs must be at least 1",
    )
    _check(t.batch_size >= 1, "--batch-size must be at least 1")
    _check(t.lr > 0 and t.head_lr > 0, "--lr must be positive")
    _check(t.backbone_lr_mult > 0, "train.backbone_lr_mult must be positive")
    _check(0 <= t.label_smoothing < 1, "train.label_smoothing must be in [0, 1)")
    for key, value, allowed in (
        ("train.strategy", t.strategy, STRATEGIES),
        ("train.optimizer", t.optimizer, OPTIMIZERS),
        ("train.scheduler", t.scheduler, SCHEDULERS),
        ("train.precision", t.precision, PRECISIONS),
        ("train.bn", t.bn, BN_MODES),
        ("train.monitor", t.monitor, MONITORS),
        ("train.sampler", t.sampler, SAMPLERS),
        ("train.class_weights", t.class_weights, CLASS_WEIGHTS),
        ("model.head", m.head, HEADS),
        ("augment.preset", cfg.augment.preset or "none", AUGMENTS),
    ):
        _check(value in allowed, f"{key} '{value}' is not one of: {', '.join(allowed)}")
    _check(
        t.strategy != "top-n" or (t.trainable_groups or 0) >= 1,
        "--strategy top-n needs --trainable-groups N (N >= 1)",
    )
    _check(
        t.strategy != "scratch" or m.weights in ("none", "imagenet"),
        "--strategy scratch starts from random weights; drop --weights PATH",
    )
    _check(all(h >= 1 for h in m.hidden_units), "model.hidden_units must be positive widths")
    _check(t.early_stopping is None or t.early_stopping >= 1, "--early-stopping must be >= 1")
