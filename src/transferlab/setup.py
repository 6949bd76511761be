"""A run's data and model, set up from its config: what training and the LR range test share.

Data flows one way: config -> :func:`resolve_config` -> :func:`prepare_split` (discover,
decode, split) and the model -> :class:`RunSetup`, which ``pipeline`` trains and ``lr_find``
probes.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from transferlab.config import AugmentPreset, RunConfig
from transferlab.data.discover import Sample, discover
from transferlab.data.split import SplitSamples, read_split_csv, stratified_split
from transferlab.data.store import ImageSet, decode_all, warn_skipped
from transferlab.data.transforms import Preprocessing
from transferlab.errors import DatasetError
from transferlab.finetune import default_augment
from transferlab.models.heads import HeadSpec
from transferlab.models.registry import create_model, load_weights_into, resolve_preprocessing

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _by_split(images: ImageSet, split: SplitSamples) -> dict[str, ImageSet]:
    index = {s.path: i for i, s in enumerate(images.samples)}
    return {
        name: images.subset([index[s.path] for s in samples]) for name, samples in split.items()
    }


def data_root(cfg: RunConfig) -> Path:
    root = Path(cfg.data.path).expanduser().resolve()
    return root.parent if root.is_file() else root


def prepare_split(
    cfg: RunConfig, prep: Preprocessing
) -> tuple[SplitSamples, dict[str, ImageSet], list[tuple[Path, str]]]:
    """Discover, decode (dropping unreadable files) and split the data."""
    root = data_root(cfg)
    if cfg.data.split_file:
        planned = read_split_csv(Path(cfg.data.split_file), root)
        samples = [s for _, group in planned.items() for s in group]
        found_skipped: list[tuple[Path, str]] = []
    else:
        found = discover(cfg.data.path)
        samples, found_skipped = found.samples, found.skipped
    class_names = sorted({s.label for s in samples})
    images, bad = decode_all(
        samples,
        class_names,
        prep,
        cfg.data.memory_cache_mb,
        warn=False,
        num_workers=cfg.data.num_workers,
    )
    _check_readable_classes(samples, bad)
    bad_paths = {p for p, _ in bad}
    good = [s for s in samples if s.path not in bad_paths]
    if cfg.data.split_file:
        split = SplitSamples(
            *[[s for s in g if s.path not in bad_paths] for _, g in planned.items()]
        )
    else:
        split = stratified_split(
            good, cfg.data.val_fraction, cfg.data.test_fraction, cfg.train.seed
        )
    skipped = [*found_skipped, *bad]
    warn_skipped(skipped)
    return split, _by_split(images, split), skipped


def _check_readable_classes(samples: Sequence[Sample], bad: Sequence[tuple[Path, str]]) -> None:
    """Labels are numbered over every class found; a class left without a readable image
    would drop out of the model's classes and shift every label after it."""
    why = dict(bad)
    readable = {s.label for s in samples if s.path not in why}
    for label in sorted({s.label for s in samples} - readable):
        files = [s.path for s in samples if s.label == label]
        raise DatasetError(
            f"class '{label}' has no readable image: all {len(files)} of its files are "
            f"unreadable ({files[0]}: {why[files[0]]}); replace them with readable images "
            "or remove the class"
        )


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def resolve_config(cfg: RunConfig) -> RunConfig:
    """The config as a run uses and saves it: what the strategy implies (scratch means
    random weights; the augment preset), absolute paths and the model's input size.

    ``config.yaml`` holds this form, so a planned config compares equal to the saved one
    of the same run (compare's re-launch) wherever it is started from.
    """
    d, m, t = cfg.data, cfg.model, cfg.train
    weights = m.weights if m.weights in ("imagenet", "none") else _absolute(m.weights)
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            d,
            path=_absolute(d.path),
            split_file=_absolute(d.split_file) if d.split_file else None,
        ),
        model=dataclasses.replace(
            m,
            weights="none" if t.strategy == "scratch" else weights,
            image_size=resolve_preprocessing(m.name, m.image_size).input_size,
        ),
        train=dataclasses.replace(
            t,
            feature_cache_dir=_absolute(t.feature_cache_dir) if t.feature_cache_dir else None,
            init_from=_absolute(t.init_from) if t.init_from else None,
        ),
        augment=dataclasses.replace(
            cfg.augment,
            preset=cfg.augment.preset or cast(AugmentPreset, default_augment(t.strategy)),
        ),
    )


@dataclass
class RunSetup:
    """A run's preprocessing, split and decoded images, and its freshly built model."""

    prep: Preprocessing
    split: SplitSamples
    sets: dict[str, ImageSet]
    skipped: list[tuple[Path, str]]
    model: torch.nn.Module
    source: str  # where the initial weights came from
    head: HeadSpec


def setup_run(cfg: RunConfig) -> RunSetup:
    """Data and model of ``cfg`` (seeded by ``train.seed``), ready to train."""
    prep = resolve_preprocessing(cfg.model.name, cfg.model.image_size)
    split, sets, skipped = prepare_split(cfg, prep)
    m = cfg.model
    head = HeadSpec(
        m.head, tuple(m.hidden_units) if m.head == "mlp" else (), m.head_dropout, m.head_bn
    )
    seed_everything(cfg.train.seed)
    model, source = create_model(
        m.name, len(split.classes), m.weights, m.drop_rate, head, dict(m.kwargs)
    )
    if cfg.train.init_from:
        source = load_weights_into(model, Path(cfg.train.init_from).expanduser())
        logger.info("initial weights from %s", cfg.train.init_from)
    return RunSetup(prep, split, sets, skipped, model, source, head)
