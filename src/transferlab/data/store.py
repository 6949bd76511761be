"""Decode images once: a uint8 tensor store in memory, or a lazy dataset from disk.

A lazy set is decoded again every epoch, by a torch ``DataLoader`` with ``num_workers``
worker processes (``data.num_workers``; 0: in the calling process). Processes rather than
threads: on small photos most of a decode is Python (opening, EXIF, conversions) that
holds the GIL, and threads did not scale there while processes did
(``benchmarks/bench_decode.py``; numbers in ``benchmarks/README.md``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from transferlab.data.discover import Sample
from transferlab.data.images import ImageReadError, load_image
from transferlab.data.transforms import Preprocessing, to_base

logger = logging.getLogger(__name__)


def _decode(path: Path, prep: Preprocessing) -> np.ndarray:
    return to_base(load_image(path), prep)


def _try_decode(path: Path, prep: Preprocessing) -> np.ndarray | str:
    try:
        return _decode(path, prep)
    except ImageReadError as exc:
        return str(exc)


class ImageSet(Dataset[tuple[torch.Tensor, int]]):
    """Images as uint8 base tensors with integer labels; in memory or read lazily."""

    def __init__(
        self,
        samples: Sequence[Sample],
        targets: Sequence[int],
        prep: Preprocessing,
        images: torch.Tensor | None = None,
        num_workers: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.targets = torch.as_tensor(list(targets), dtype=torch.long)
        self.prep = prep
        self.images = images  # (N, 3, base, base) uint8 when held in memory
        # Processes that decode a lazy set's batches (data.num_workers); carried by the set
        # so that every loop over it decodes in parallel without being told.
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.images is not None:
            return self.images[i], int(self.targets[i])
        return torch.from_numpy(_decode(self.samples[i].path, self.prep)), int(self.targets[i])

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def subset(self, indices: Sequence[int]) -> ImageSet:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        images = self.images.index_select(0, idx) if self.images is not None else None
        return ImageSet(
            [self.samples[i] for i in idx.tolist()],
            self.targets[idx].tolist(),
            self.prep,
            images,
            self.num_workers,
        )


@dataclass
class LoadResult:
    images: ImageSet
    skipped: list[tuple[Path, str]]


def load_images(
    samples: Sequence[Sample],
    class_to_idx: dict[str, int],
    prep: Preprocessing,
    memory_budget_mb: int,
    num_workers: int = 0,
) -> LoadResult:
    """Decode every image once (checking it), keeping them in memory if they fit the budget.

    Unreadable files are dropped and returned in ``skipped`` with the reason. A set left
    on disk decodes its batches in ``num_workers`` processes (see :func:`iterate_batches`).
    """
    base = prep.base_size
    keep = len(samples) * 3 * base * base <= memory_budget_mb * 1024 * 1024
    workers = min(8, os.cpu_count() or 1)
    good: list[Sample] = []
    arrays: list[np.ndarray] = []
    skipped: list[tuple[Path, str]] = []
    with ThreadPoolExecutor(workers, thread_name_prefix="transferlab-check") as pool:
        for sample, result in zip(
            samples, pool.map(lambda s: _try_decode(s.path, prep), samples), strict=True
        ):
            if isinstance(result, str):
                skipped.append((sample.path, result))
                continue
            good.append(sample)
            if keep:
                arrays.append(result)
    tensor = torch.from_numpy(np.stack(arrays)) if keep and arrays else None
    if not keep:
        logger.info(
            "images exceed memory_cache_mb=%d; decoding from disk each epoch", memory_budget_mb
        )
    targets = [class_to_idx[s.label] for s in good]
    return LoadResult(ImageSet(good, targets, prep, tensor, num_workers), skipped)


def iterate_batches(
    data: ImageSet,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    num_workers: int | None = None,
    order: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(uint8 images, labels)`` batches in ``order`` (or shuffled, or as stored).

    In-memory sets are sliced, not collated; sets on disk are decoded by a ``DataLoader``
    with ``num_workers`` worker processes (None: the set's own ``num_workers``).
    """
    n = len(data)
    if order is None:
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if data.images is not None:
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield data.images[idx], data.targets[idx]
        return
    loader = DataLoader(
        Subset(data, order.tolist()),
        batch_size=batch_size,
        shuffle=False,
        num_workers=data.num_workers if num_workers is None else num_workers,
    )
    yield from loader


def warn_skipped(skipped: Sequence[tuple[Path, str]]) -> None:
    if skipped:
        shown = "; ".join(f"{p} ({why})" for p, why in skipped[:10])
        more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        logger.warning("skipped %d unreadable file(s): %s%s", len(skipped), shown, more)


def decode_all(
    samples: list[Sample],
    class_names: list[str],
    prep: Preprocessing,
    budget_mb: int,
    warn: bool = True,
    num_workers: int = 0,
) -> tuple[ImageSet, list[tuple[Path, str]]]:
    """Decode ``samples`` once; unreadable files are returned (and warned about) as skipped.

    ``num_workers``: processes that decode a set left on disk each epoch."""
    class_to_idx = {c: i for i, c in enumerate(class_names)}
    loaded = load_images(samples, class_to_idx, prep, budget_mb, num_workers)
    if warn:
        warn_skipped(loaded.skipped)
    return loaded.images, loaded.skipped
