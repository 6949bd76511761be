"""Stratified train/val/test splits, saved as ``split.csv`` so runs compare on identical images."""

from __future__ import annotations

import csv
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transferlab.data.discover import Sample
from transferlab.errors import DatasetError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitSamples:
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]

    def items(self) -> list[tuple[str, list[Sample]]]:
        return [("train", self.train), ("val", self.val), ("test", self.test)]

    @property
    def classes(self) -> list[str]:
        return sorted({s.label for s in self.train})

    def counts(self) -> dict[str, dict[str, int]]:
        """``{class: {split: n}}`` for the data summary."""
        out: dict[str, dict[str, int]] = {c: dict.fromkeys(SPLITS, 0) for c in self.classes}
        for split, samples in self.items():
            for s in samples:
                out.setdefault(s.label, dict.fromkeys(SPLITS, 0))[split] += 1
        return out


def _take(n: int, fraction: float) -> int:
    """Images a class of ``n`` gives to a split of ``fraction``: ``round(n * fraction)``, which
    rounds halves to even (10 x 0.15 -> 2, 30 x 0.15 -> 4), but at least one if ``fraction > 0``.
    """
    return max(1, round(n * fraction)) if fraction > 0 else 0


def stratified_split(
    samples: list[Sample],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    groups: Sequence[Sequence[Path]] = (),
) -> SplitSamples:
    """Split per class so every split keeps the class proportions.

    Samples that already carry a split (from ``train/``, ``val/`` folders or a CSV column) keep
    it; the rest are split by the fractions, but only into splits the layout does not provide.
    ``groups``: copies of one image (exact or near duplicates) that must land in one split,
    else a test image would be a training image in disguise; a group whose member has a
    given split pulls the others into it. Without groups every image is its own, and the
    split is the plain stratified one.
    """
    group_of = {p: n for n, group in enumerate(groups) for p in group}
    fixed: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    free: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        (fixed[s.split] if s.split else free[s.label]).append(s)
    has = {k: bool(v) for k, v in fixed.items()}
    val_f = 0.0 if has["val"] else val_fraction
    test_f = 0.0 if has["test"] else test_fraction
    rng = random.Random(seed)
    out: dict[str, list[Sample]] = {k: list(v) for k, v in fixed.items()}
    placed = {group_of[s.path]: s.split for s in samples if s.split and s.path in group_of}
    for label in sorted(free):
        group = sorted(free[label], key=lambda s: str(s.path))
        rng.shuffle(group)
        n_val, n_test = _take(len(group), val_f), _take(len(group), test_f)
        if len(group) - n_val - n_test < 1:
            raise DatasetError(
                f"class '{label}' has {len(group)} image(s), too few for the train/val/test "
                "split; add images or lower --val-fraction / --test-fraction"
            )
        parts = _fill({"val": n_val, "test": n_test}, _units(group, group_of), placed)
        for k in SPLITS:
            out[k].extend(Sample(s.path, s.label, k) for s in parts[k])
    if not out["val"] and fixed["train"] and not free:
        hint = next((s.add_val for s in samples if s.add_val), "add val images")
        raise DatasetError(
            f"the val split is empty: every image has a split of its own and none is val; {hint}"
        )
    result = SplitSamples(out["train"], out["val"], out["test"])
    _check_split(result)
    return result


def _units(
    shuffled: list[Sample], group_of: dict[Path, int]
) -> list[tuple[int | None, list[Sample]]]:
    """The shuffled images of a class as units that move together: a group's members (in
    the place of its first), every other image alone."""
    units: list[tuple[int | None, list[Sample]]] = []
    index: dict[int, int] = {}
    for s in shuffled:
        g = group_of.get(s.path)
        if g is None:
            units.append((None, [s]))
        elif g in index:
            units[index[g]][1].append(s)
        else:
            index[g] = len(units)
            units.append((g, [s]))
    return units


def _fill(
    wanted: dict[str, int],
    units: list[tuple[int | None, list[Sample]]],
    placed: dict[int, str],
) -> dict[str, list[Sample]]:
    """Units in order into val, then test, while they fit the wanted counts, the rest into
    train; a group placed before (a given split, another class) goes where it went. With
    single images this is the first ``n_val`` to val, the next ``n_test`` to test."""
    parts: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    for g, unit in units:
        dest = placed.get(g) if g is not None else None
        if dest is None:
            fits = [k for k in ("val", "test") if len(parts[k]) + len(unit) <= wanted[k]]
            dest = fits[0] if fits else "train"
            if g is not None:
                placed[g] = dest
        parts[dest].extend(unit)
    return parts


def _check_split(split: SplitSamples) -> None:
    train_classes = set(split.classes)
    if not split.train:
        raise DatasetError("the train split is empty; add images or lower the fractions")
    if not split.val:
        raise DatasetError("the val split is empty; use --val-fraction > 0 or add a val/ folder")
    for name, samples in split.items():
        extra = {s.label for s in samples} - train_classes
        if extra:
            raise DatasetError(
                f"class '{sorted(extra)[0]}' is in the {name} split but has no training images; "
                "add training images for it or remove it"
            )
    missing = train_classes - {s.label for s in split.val}
    if missing:
        logger.warning("classes with no validation image: %s", ", ".join(sorted(missing)))


def relative_path(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def write_split_csv(split: SplitSamples, path: Path, root: Path) -> None:
    """Write ``path,label,split`` rows; paths relative to ``root`` when inside it."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "split"])
        for name, samples in split.items():
            for s in samples:
                writer.writerow([relative_path(s.path, root), s.label, name])


def read_split_csv(path: Path, root: Path) -> SplitSamples:
    """Read a ``split.csv``; relative paths are resolved against the data ``root``."""
    if not path.is_file():
        raise DatasetError(f"split file not found: {path}")
    out: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    missing: list[str] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"path", "label", "split"} <= set(reader.fieldnames):
            raise DatasetError(f"{path} must have the header path,label,split")
        for n, row in enumerate(reader, start=2):
            split = row["split"].strip()
            if split not in out:
                raise DatasetError(f"{path} line {n}: split {split!r} is not train, val or test")
            p = Path(row["path"])
            p = p if p.is_absolute() else root / p
            if not p.is_file():
                missing.append(row["path"])
                continue
            out[split].append(Sample(p, row["label"], split))
    if missing:
        raise DatasetError(
            f"{len(missing)} file(s) in {path} not found under {root} (first: {missing[0]!r}); "
            "pass the same DATA folder the split was made from"
        )
    result = SplitSamples(out["train"], out["val"], out["test"])
    _check_split(result)
    return result
