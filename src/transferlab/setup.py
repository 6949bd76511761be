"""A run's data and model, set up from its config: what training and the LR range test share.

Data flows one way: config -> :func:`resolve_config` -> :func:`prepare_split` (discover,
decode, split) and the model -> :class:`RunSetup`, which ``pipeline`` trains and ``lr_find``
probes.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from transferlab.audit.core import HashChecks, SplitAudit, audit_split, hash_checks
from transferlab.config import AugmentPreset, RunConfig
from transferlab.data.discover import Sample, discover
from transferlab.data.split import SplitSamples, read_split_csv, stratified_split
from transferlab.data.store import ImageSet, decode_all, split_in_place, warn_skipped
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
    """The split's sets; ``images`` is reordered in place so that they are views of it."""
    index = {s.path: i for i, s in enumerate(images.samples)}
    groups = {name: [index[s.path] for s in samples] for name, samples in split.items()}
    return dict(zip(groups, split_in_place(images, list(groups.values())), strict=True))


def data_root(cfg: RunConfig) -> Path:
    root = Path(cfg.data.path).expanduser().resolve()
    return root.parent if root.is_file() else root


@dataclass
class PreparedData:
    """A run's split, decoded images, skipped files and the hash checks (None when off)."""

    split: SplitSamples
    sets: dict[str, ImageSet]
    skipped: list[tuple[Path, str]]
    audit: SplitAudit | None


def prepare_split(
    cfg: RunConfig, prep: Preprocessing
) -> tuple[SplitSamples, dict[str, ImageSet], list[tuple[Path, str]]]:
    """Discover, decode (dropping unreadable files) and split the data."""
    data = prepare_data(cfg, prep)
    return data.split, data.sets, data.skipped


def prepare_data(cfg: RunConfig, prep: Preprocessing) -> PreparedData:
    """Discover, decode (dropping unreadable files), hash and split the data; with
    ``data.strict``, leakage or label conflicts raise before anything is written."""
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
    started = time.perf_counter()
    checks = hash_checks(good) if cfg.data.audit else None
    if cfg.data.split_file:
        split = SplitSamples(
            *[[s for s in g if s.path not in bad_paths] for _, g in planned.items()]
        )
    else:
        groups = checks.path_groups() if checks else ()
        split = stratified_split(
            good, cfg.data.val_fraction, cfg.data.test_fraction, cfg.train.seed, groups
        )
    audit = _audit(checks, split, time.perf_counter() - started, cfg.data.strict)
    skipped = [*found_skipped, *bad]
    warn_skipped(skipped)
    return PreparedData(split, _by_split(images, split), skipped, audit)


def _audit(
    checks: HashChecks | None, split: SplitSamples, seconds: float, strict: bool
) -> SplitAudit | None:
    """Leakage and label conflicts of the final split: an error with ``strict``, else a
    warning (copies that the split could move are in one split already)."""
    if checks is None:
        return None
    audit = audit_split(checks, {s.path: k for k, ss in split.items() for s in ss}, seconds)
    problem = audit.problem()
    if problem and strict:
        raise DatasetError(
            f"--strict: {problem}; remove or relabel the copies "
            "('transferlab audit DATA --html audit.html' shows them all)"
        )
    if problem:
        logger.warning("%s; see 'transferlab audit DATA' (--strict stops the run)", problem)
    logger.info("hash checks: %d duplicate group(s) in %.1f s", len(audit.groups), audit.seconds)
    return audit


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
            class_names=_absolute(d.class_names) if d.class_names else None,
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
    audit: SplitAudit | None = None  # the hash checks; None with data.audit off


def setup_run(cfg: RunConfig) -> RunSetup:
    """Data and model of ``cfg`` (seeded by ``train.seed``), ready to train."""
    prep = resolve_preprocessing(cfg.model.name, cfg.model.image_size)
    data = prepare_data(cfg, prep)
    split, sets, skipped = data.split, data.sets, data.skipped
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
    return RunSetup(prep, split, sets, skipped, model, source, head, data.audit)
