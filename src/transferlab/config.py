"""Frozen configuration dataclasses, built once at the edge and saved into every run.

A run is fully described by :class:`RunConfig`; ``config.yaml`` in a run folder is
``RunConfig.to_dict()`` and can be fed back with ``--config``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from transferlab.errors import ConfigError

STRATEGIES = ("two-stage",)
OPTIMIZERS = ("adamw",)
SCHEDULERS = ("cosine",)
AUGMENTS = ("none", "light")
PRECISIONS = ("fp32", "bf16")


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
    drop_rate: float = 0.2


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe. The default is a two-stage fine-tune for small datasets."""

    strategy: str = "two-stage"
    epochs: int = 4  # epochs with the backbone unfrozen
    warmup_epochs: int = 5  # head-only epochs before; cheap, features are cached
    batch_size: int = 32
    lr: float = 1e-3  # learning rate of the head; the backbone gets lr * backbone_lr_mult
    warmup_lr: float = 3e-3  # learning rate of the head during the head-only warm-up
    backbone_lr_mult: float = 0.3
    weight_decay: float = 0.02
    optimizer: str = "adamw"
    scheduler: str = "cosine"
    label_smoothing: float = 0.1
    augment: str = "light"
    precision: str = "fp32"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    def validate(self) -> RunConfig:
        _validate(self)
        return self


_T = TypeVar("_T")
_SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _build(cls: type[_T], values: Mapping[str, Any], where: str) -> _T:
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {where}.{unknown[0]}; known keys in '{where}': {', '.join(sorted(known))}"
        )
    return cls(**values)


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
        merged[section].update(values)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if value is not None:
            merged[section][key] = value
    cfg = RunConfig(**{name: _build(cls, merged[name], name) for name, cls in _SECTIONS.items()})
    return cfg.validate()


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML config file into a mapping, with errors that name the file."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc.__class__.__name__}); fix it") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping with sections data/model/train")
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
    _check(t.epochs >= 0 and t.warmup_epochs >= 0, "--epochs must be >= 0")
    _check(t.epochs + t.warmup_epochs > 0, "--epochs and train.warmup_epochs are both 0")
    _check(t.batch_size >= 1, "--batch-size must be at least 1")
    _check(t.lr > 0 and t.warmup_lr > 0, "--lr must be positive")
    _check(t.backbone_lr_mult > 0, "train.backbone_lr_mult must be positive")
    _check(0 <= t.label_smoothing < 1, "train.label_smoothing must be in [0, 1)")
    for key, value, allowed in (
        ("strategy", t.strategy, STRATEGIES),
        ("optimizer", t.optimizer, OPTIMIZERS),
        ("scheduler", t.scheduler, SCHEDULERS),
        ("augment", t.augment, AUGMENTS),
        ("precision", t.precision, PRECISIONS),
    ):
        _check(value in allowed, f"train.{key} '{value}' is not one of: {', '.join(allowed)}")
