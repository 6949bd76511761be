"""The audit of a labelled image folder: file checks, duplicate groups, label suspects.

:func:`hash_checks` is the cheap part (one read of each file) that ``train`` runs before
splitting; :func:`audit_data` adds the class counts and, with a backbone, feature
near-duplicates and label suspects.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.audit.duplicates import (
    CONTENT,
    FEATURES,
    PHASH,
    Group,
    cosine_pairs,
    group_pairs,
    same_digest_pairs,
)
from transferlab.audit.hashes import PHASH_DISTANCE, FileFacts, all_facts, hamming_pairs
from transferlab.data.discover import Sample, discover
from transferlab.data.split import read_split_csv

logger = logging.getLogger(__name__)

# Pooled-feature cosine from which two images are near-copies. On the example photos at
# 96 px a 93-95 % centre crop (which the perceptual hash misses) scores 0.94-0.97; on the
# 10,130 AHE photos 0.85 chains different photos into groups of up to 103, 0.92 into at
# most 8 (benchmarks/README.md).
COSINE_SIMILARITY = 0.92
TINY_PX = 32  # images with a side below this are reported as tiny
TOP_SUSPECTS = 50


@dataclass
class DuplicateGroup:
    """Copies of one image: files, their labels and splits, and what found them."""

    files: list[str]
    labels: list[str]
    splits: list[str | None]
    found_by: list[str]

    @property
    def conflict(self) -> bool:
        """Copies with different labels: at least one label is wrong."""
        return len(set(self.labels)) > 1

    @property
    def leak(self) -> bool:
        """Copies in different splits: a test image the model has already seen."""
        return len({s for s in self.splits if s}) > 1

    @property
    def where(self) -> str:
        parts = ["across classes" if self.conflict else "within one class"]
        return ", ".join(parts + (["across splits"] if self.leak else []))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "where": self.where, "conflict": self.conflict, "leak": self.leak}


@dataclass
class HashChecks:
    """What one read of every file finds: facts per file (in order) and duplicate groups."""

    samples: list[Sample]
    facts: list[FileFacts]
    groups: list[Group]

    def readable(self) -> list[int]:
        return [i for i, f in enumerate(self.facts) if not f.error]

    def describe(self, split_of: Mapping[Path, str | None] | None = None) -> list[DuplicateGroup]:
        """The groups with labels and splits (``split_of``: each path's split, where known)."""
        out = []
        for g in self.groups:
            ss = [self.samples[i] for i in g.members]
            splits = [(split_of or {}).get(s.path, s.split) for s in ss]
            out.append(
                DuplicateGroup(
                    [str(s.path) for s in ss], [s.label for s in ss], splits, [*g.found_by]
                )
            )
        return out

    def path_groups(self) -> list[list[Path]]:
        return [[self.samples[i].path for i in g.members] for g in self.groups]


def hash_checks(samples: Sequence[Sample]) -> HashChecks:
    """Read and hash every sample; group exact copies and perceptual-hash near-copies."""
    facts = all_facts([s.path for s in samples])
    return HashChecks(list(samples), facts, _groups(facts, {}))


def _groups(facts: Sequence[FileFacts], extra: Mapping[str, np.ndarray]) -> list[Group]:
    """Groups of content, perceptual-hash and ``extra`` pairs; pairs of identical files
    count for content only, so that a group's methods say what the cheaper one missed."""
    usable = np.array(
        [i for i, f in enumerate(facts) if not f.error and not f.flat], dtype=np.int64
    )
    hashes = np.array([facts[i].phash for i in usable], dtype=np.uint64)
    near = usable[hamming_pairs(hashes, PHASH_DISTANCE)] if len(usable) else np.zeros((0, 2))
    pairs = {PHASH: near, **extra}
    digests = [f.digest for f in facts]
    other = {
        k: np.array([p for p in v if digests[p[0]] != digests[p[1]]], dtype=np.int64).reshape(-1, 2)
        for k, v in pairs.items()
    }
    return group_pairs(len(facts), {CONTENT: same_digest_pairs(digests), **other})


@dataclass
class Suspect:
    """A likely mislabelled image: its label, the probe's label and their probabilities."""

    file: str
    given: str
    suggested: str
    given_probability: float
    suggested_probability: float


@dataclass
class AuditResult:
    """Everything ``transferlab audit`` reports; :meth:`to_dict` is its JSON."""

    data: str
    layout: str
    images: int
    class_counts: dict[str, int]
    unreadable: list[tuple[str, str]]
    tiny: list[str]
    kinds: dict[str, list[str]]  # greyscale / cmyk / alpha / 16-bit / exif-rotated -> files
    groups: list[DuplicateGroup]
    suspects: list[Suspect] = field(default_factory=list)
    features: str = ""  # the backbone used, "" when the feature checks did not run
    label_issues: int = 0  # how many images cleanlab flags; the first TOP_SUSPECTS are listed
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def imbalance(self) -> float:
        counts = [n for n in self.class_counts.values() if n]
        return max(counts) / min(counts) if counts else 0.0

    def summary(self) -> dict[str, int]:
        return {
            "images": self.images,
            "classes": len(self.class_counts),
            "unreadable": len(self.unreadable),
            "tiny": len(self.tiny),
            "duplicate_groups": len(self.groups),
            "exact_groups": sum(g.found_by == [CONTENT] for g in self.groups),
            "label_conflicts": sum(g.conflict for g in self.groups),
            "leaks": sum(g.leak for g in self.groups),
            "label_suspects": len(self.suspects),
            "label_issues": self.label_issues,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "layout": self.layout,
            "summary": self.summary(),
            "imbalance_ratio": round(self.imbalance, 3),
            "class_counts": self.class_counts,
            "unreadable": [{"file": f, "reason": r} for f, r in self.unreadable],
            "tiny": self.tiny,
            "kinds": self.kinds,
            "duplicate_groups": [g.to_dict() for g in self.groups],
            "label_suspects": [asdict(s) for s in self.suspects],
            "features": self.features,
            "notes": self.notes,
            "seconds": self.seconds,
        }


def _kinds(samples: Sequence[Sample], facts: Sequence[FileFacts]) -> dict[str, list[str]]:
    tests = {
        "greyscale": lambda f: f.mode in ("1", "L", "LA", "I", "F") or f.mode.startswith("I;"),
        "cmyk": lambda f: f.mode == "CMYK",
        "alpha": lambda f: f.mode in ("RGBA", "LA", "PA") or f.mode.endswith("A"),
        "16-bit": lambda f: f.mode.startswith("I;16") or f.mode == "I",
        "exif-rotated": lambda f: f.rotated,
    }
    return {
        kind: [str(s.path) for s, f in zip(samples, facts, strict=True) if not f.error and test(f)]
        for kind, test in tests.items()
    }


def load_samples(
    data: Path, split_file: Path | None
) -> tuple[list[Sample], str, list[tuple[Path, str]]]:
    """The labelled images of ``data`` (with the splits of ``split_file`` when given)."""
    found = discover(data)
    if split_file is None:
        return found.samples, found.layout, found.skipped
    root = data.parent if data.is_file() else data
    planned = read_split_csv(split_file, root)
    return (
        [s for _, g in planned.items() for s in g],
        f"{found.layout} + {split_file.name}",
        found.skipped,
    )


def audit_data(
    data: Path,
    split_file: Path | None = None,
    model: str | None = "tf_efficientnet_lite0",
    image_size: int | None = None,
    cache_dir: Path | None = None,
    seed: int = 0,
    similarity: float = COSINE_SIMILARITY,
) -> AuditResult:
    """Audit ``data``; ``model=None`` runs only the file and hash checks. ``similarity``:
    the feature cosine from which two images count as near-copies."""
    started = time.perf_counter()
    samples, layout, skipped = load_samples(data, split_file)
    checks = hash_checks(samples)
    seconds = {"hash_checks": time.perf_counter() - started}
    facts = checks.facts
    result = AuditResult(
        data=str(data),
        layout=layout,
        images=len(samples),
        class_counts=dict(sorted(Counter(s.label for s in samples).items())),
        unreadable=[(str(p), why) for p, why in skipped]
        + [(str(s.path), f.error) for s, f in zip(samples, facts, strict=True) if f.error],
        tiny=[
            str(s.path)
            for s, f in zip(samples, facts, strict=True)
            if not f.error and min(f.width, f.height) < TINY_PX
        ],
        kinds=_kinds(samples, facts),
        groups=checks.describe(),
        seconds=seconds,
    )
    if model is not None:
        _feature_checks(result, checks, model, image_size, cache_dir, seed, similarity)
    result.seconds = {k: round(v, 2) for k, v in result.seconds.items()}
    return result


def _feature_checks(
    result: AuditResult,
    checks: HashChecks,
    model: str,
    image_size: int | None,
    cache_dir: Path | None,
    seed: int,
    similarity: float,
) -> None:
    """Add feature near-duplicates and label suspects to ``result``."""
    from transferlab.audit.features import backbone_features

    started = time.perf_counter()
    keep = checks.readable()
    samples = [checks.samples[i] for i in keep]
    feats = backbone_features(samples, model, image_size, cache_dir)
    result.seconds["features"] = time.perf_counter() - started
    started = time.perf_counter()
    near = np.asarray(keep, dtype=np.int64)[cosine_pairs(feats, similarity)]
    groups = _groups(checks.facts, {FEATURES: near})
    result.groups = HashChecks(checks.samples, checks.facts, groups).describe()
    result.features = f"{model} ({feats.shape[1]} features)"
    result.seconds["feature_duplicates"] = time.perf_counter() - started
    started = time.perf_counter()
    result.suspects, result.label_issues, note = _suspects(samples, feats.numpy(), seed)
    if note:
        result.notes.append(note)
    result.seconds["label_probe"] = time.perf_counter() - started


def _suspects(
    samples: Sequence[Sample], feats: np.ndarray, seed: int
) -> tuple[list[Suspect], int, str]:
    from transferlab.audit.labels import folds_for, out_of_fold_probs, ranked_issues

    classes = sorted({s.label for s in samples})
    labels = np.array([classes.index(s.label) for s in samples])
    if folds_for(labels) == 0:
        return [], 0, "label check skipped: every class needs at least 2 readable images"
    probs = out_of_fold_probs(feats, labels, seed)
    issues = ranked_issues(labels, probs)
    found = []
    for i in issues[:TOP_SUSPECTS]:
        best = int(probs[i].argmax())
        found.append(
            Suspect(
                str(samples[i].path),
                samples[i].label,
                classes[best],
                round(float(probs[i, labels[i]]), 4),
                round(float(probs[i, best]), 4),
            )
        )
    return found, len(issues), ""


@dataclass
class SplitAudit:
    """The hash checks of a run's data against its final split: what ``train`` reports,
    and the training images' digests and perceptual hashes that it stores."""

    groups: list[DuplicateGroup]
    train_digests: list[bytes]
    train_phashes: list[int]
    seconds: float

    def problem(self) -> str:
        """One line on leakage and label conflicts ("" when there are none)."""
        return check_groups(self.groups)

    def to_metrics(self) -> dict[str, Any]:
        shown = [g.to_dict() for g in self.groups if g.conflict or g.leak][:TOP_SUSPECTS]
        return {
            "duplicate_groups": len(self.groups),
            "label_conflicts": sum(g.conflict for g in self.groups),
            "leaks": sum(g.leak for g in self.groups),
            "duplicate_images": sum(len(g.files) for g in self.groups),
            "problem_groups": shown,
            "seconds": round(self.seconds, 2),
        }


def audit_split(checks: HashChecks, split: Mapping[Path, str], seconds: float) -> SplitAudit:
    """``checks`` of the images ``split`` places (path -> train/val/test)."""
    train = [
        f
        for s, f in zip(checks.samples, checks.facts, strict=True)
        if split.get(s.path) == "train" and not f.error
    ]
    return SplitAudit(
        checks.describe(dict(split)),
        [f.digest for f in train],
        [f.phash for f in train if not f.flat],
        seconds,
    )


def check_groups(groups: Sequence[DuplicateGroup]) -> str:
    """One line on leaks and label conflicts ("" when there are none)."""
    leaks = [g for g in groups if g.leak]
    conflicts = [g for g in groups if g.conflict]
    parts = []
    if leaks:
        parts.append(
            f"{len(leaks)} duplicate group(s) across train/val/test (first: {_first(leaks[0])})"
        )
    if conflicts:
        parts.append(f"{len(conflicts)} across classes (first: {_first(conflicts[0])})")
    return "; ".join(parts)


def _first(g: DuplicateGroup) -> str:
    return " = ".join(
        f"{Path(f).name} [{lab}{'/' + s if s else ''}]"
        for f, lab, s in zip(g.files[:2], g.labels[:2], g.splits[:2], strict=True)
    )


__all__ = [
    "AuditResult",
    "DuplicateGroup",
    "HashChecks",
    "SplitAudit",
    "audit_data",
    "audit_split",
    "check_groups",
    "hash_checks",
]
