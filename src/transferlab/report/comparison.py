"""Pure logic of comparison tables: wins and losses against a baseline, spread, mean ± std,
and bootstrap confidence intervals of seed-averaged metrics. No files, no formatting markup."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from transferlab.metrics import bootstrap_intervals

DECIMALS = 3  # per-class F1 is shown, and compared with a baseline, at this precision


def normalise_class(name: str) -> str:
    """``'Dome (inner)'``, ``'dome(inner)'`` and ``'dome_inner'`` all become ``'domeinner'``."""
    return re.sub(r"[\s_\-()\[\]]+", "", name.lower())


def match_classes(
    values: Mapping[str, float], classes: Sequence[str]
) -> tuple[dict[str, float | None], list[str]]:
    """Re-key ``values`` (e.g. a paper's per-class F1) by ``classes``; also the unmatched keys."""
    by_norm = {normalise_class(k): (k, float(v)) for k, v in values.items()}
    matched: dict[str, float | None] = {}
    used: set[str] = set()
    for c in classes:
        hit = by_norm.get(normalise_class(c))
        matched[c] = hit[1] if hit else None
        if hit:
            used.add(hit[0])
    return matched, sorted(set(values) - used)


def beats(value: float, baseline: float | None, decimals: int = DECIMALS) -> bool | None:
    """True if ``value`` beats ``baseline`` at the shown precision, False if it loses, None for
    a tie or no baseline (a shown 0.906 against a paper's 0.906 is a tie, not a win)."""
    if baseline is None:
        return None
    a, b = round(value, decimals), round(baseline, decimals)
    return None if a == b else a > b


def wins_losses(
    f1: Mapping[str, float], baseline: Mapping[str, float | None], decimals: int = DECIMALS
) -> tuple[int, int]:
    """How many classes beat / lose to the baseline (ties and classes without one count 0)."""
    verdicts = [beats(v, baseline.get(c), decimals) for c, v in f1.items()]
    return sum(v is True for v in verdicts), sum(v is False for v in verdicts)


def format_beaten(net: int) -> str:
    """The seeds' notation: ``+2``, ``±0``, ``-2``."""
    return "±0" if net == 0 else f"{net:+d}"


def spread(values: Sequence[float]) -> float:
    """Max minus min across classes: how uneven the model is."""
    return float(max(values) - min(values)) if len(values) else 0.0


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0


@dataclass(frozen=True)
class F1Row:
    """One row of the per-class F1 table."""

    name: str
    f1: dict[str, float | None]  # by class; None where unknown (a baseline missing a class)
    wins: int = 0
    losses: int = 0
    better: dict[str, bool | None] = field(default_factory=dict)  # per class, vs the baseline
    is_baseline: bool = False
    std: dict[str, float] = field(default_factory=dict)  # per class, over seeds

    @property
    def net(self) -> int:
        return self.wins - self.losses

    @property
    def spread(self) -> float:
        return spread([v for v in self.f1.values() if v is not None])

    @property
    def mean(self) -> float:
        known = [v for v in self.f1.values() if v is not None]
        return float(np.mean(known)) if known else float("nan")


def f1_table(
    runs: Sequence[tuple[str, Mapping[str, float]]],
    classes: Sequence[str],
    baseline: tuple[str, Mapping[str, float | None]] | None = None,
    stds: Mapping[str, Mapping[str, float]] | None = None,
    decimals: int = DECIMALS,
) -> list[F1Row]:
    """The baseline row (if any) then one row per run, with wins/losses per class."""
    rows: list[F1Row] = []
    base: Mapping[str, float | None] = {}
    if baseline is not None:
        base = {c: baseline[1].get(c) for c in classes}
        rows.append(F1Row(baseline[0], dict(base), is_baseline=True))
    for name, f1 in runs:
        values: dict[str, float | None] = {c: float(f1[c]) for c in classes}
        better = {c: beats(float(f1[c]), base.get(c), decimals) for c in classes}
        wins, losses = wins_losses({c: float(f1[c]) for c in classes}, base, decimals)
        rows.append(F1Row(name, values, wins, losses, better, std=dict((stds or {}).get(name, {}))))
    return rows


def bootstrap_mean_ci(
    y_true: Sequence[int] | np.ndarray,
    y_preds: Sequence[Sequence[int] | np.ndarray],
    num_classes: int,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """95% CIs of accuracy and macro-F1 averaged over several runs (seeds) evaluated on the
    same images: each resample draws images once and scores every run on them.

    The one bootstrap of :func:`transferlab.metrics.bootstrap_intervals` (stratified
    percentile); with a single run this equals :func:`transferlab.metrics.bootstrap_ci`.
    """
    boot = bootstrap_intervals(y_true, y_preds, num_classes, n_boot, level, seed)
    return {"accuracy": boot["accuracy"], "macro_f1": boot["macro_f1"]}
