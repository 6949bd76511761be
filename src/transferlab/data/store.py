"""Decode images once: a uint8 tensor store in memory, or a memory-mapped store on disk.

Each image is stored as a square at the set's stored side (:func:`stored_side`: the most
detail any of its images has, at most the model's base side), so small photos are not
upsampled just to be kept; the batched transforms resize on the fly. A set that fits
``data.memory_cache_mb`` at that side is decoded into one preallocated tensor, in place;
a bigger one is decoded once into a file of the image cache (:mod:`disk_store`), shared by
the processes of a machine and reused until its images change.

Decoding runs in ``data.num_workers`` processes (0: a pool of threads in this process, as
before). Processes rather than threads: on small photos most of a decode is Python
(opening, EXIF, conversions) that holds the GIL, and threads did not scale there while
processes did (``benchmarks/bench_decode.py``; numbers in ``benchmarks/README.md``).
Large JPEGs are decoded at a reduced scale (``load_image(draft=...)``).

A set built directly without pixels (``ImageSet(samples, targets, prep)``) decodes each
image when asked, through a ``DataLoader`` with ``num_workers`` worker processes.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from transferlab.data import disk_store
from transferlab.data.discover import Sample
from transferlab.data.images import ImageReadError, load_image, shorter_side
from transferlab.data.transforms import Preprocessing, stored_side, to_base

logger = logging.getLogger(__name__)

# Images handed to the decoding pool at a time: bounds the results waiting to be stored
# (and the pending tasks) whatever the size of the dataset.
_CHUNK = 512


def _decode(path: Path, prep: Preprocessing, side: int | None = None) -> np.ndarray:
    side = side or prep.base_size
    return to_base(load_image(path, draft=side), prep, side)


def _try_decode(path: Path, prep: Preprocessing, side: int) -> np.ndarray | str:
    try:
        return _decode(path, prep, side)
    except ImageReadError as exc:
        return str(exc)


class ImageSet(Dataset[tuple[torch.Tensor, int]]):
    """Images as uint8 squares with integer labels: in memory, memory-mapped, or lazy.

    ``images``: (N, 3, S, S) in RAM, else None. ``mapped``/``rows``: a memory-mapped
    store (shared by the subsets of one set) and the row of each sample in it. ``side``:
    the side a lazy set decodes at (the base side unless given).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        targets: Sequence[int],
        prep: Preprocessing,
        images: torch.Tensor | None = None,
        num_workers: int = 0,
        mapped: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
        side: int | None = None,
    ) -> None:
        self.samples = list(samples)
        self.targets = torch.as_tensor(list(targets), dtype=torch.long)
        self.prep = prep
        self.images = images
        self.mapped = mapped
        self.rows = rows if rows is not None or mapped is None else torch.arange(len(mapped))
        self._side = side
        # Processes that decode a lazy set's batches (data.num_workers); carried by the set
        # so that every loop over it decodes in parallel without being told.
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.images is not None:
            return self.images[i], int(self.targets[i])
        if self.mapped is not None and self.rows is not None:
            return self.mapped[int(self.rows[i])].clone(), int(self.targets[i])
        image = _decode(self.samples[i].path, self.prep, self.side)
        return torch.from_numpy(image), int(self.targets[i])

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    @property
    def side(self) -> int:
        """The side of the stored squares."""
        if self.images is not None:
            return int(self.images.shape[-1])
        if self.mapped is not None:
            return int(self.mapped.shape[-1])
        return self._side or self.prep.base_size

    def subset(self, indices: Sequence[int]) -> ImageSet:
        """The images at ``indices``: a view for consecutive rows, else a copy of only
        those rows; a memory-mapped set's subsets share its map."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return ImageSet(
            [self.samples[i] for i in idx.tolist()],
            self.targets[idx].tolist(),
            self.prep,
            _rows_of(self.images, idx) if self.images is not None else None,
            self.num_workers,
            self.mapped,
            self.rows[idx] if self.rows is not None else None,
            self._side,
        )


def split_in_place(data: ImageSet, groups: Sequence[Sequence[int]]) -> list[ImageSet]:
    """The sets of the rows in each of ``groups``, with no copy of the pixels: a set in
    memory is first reordered in place (``data`` with it) so that each group's rows are
    consecutive and its set a view; a set on disk or lazy shares its map or files anyway.

    A copy per group would put a second store in memory next to the first at the peak.
    """
    if data.images is None:
        return [data.subset(g) for g in groups]
    order = [i for g in groups for i in g]
    placed = set(order)
    full = order + [i for i in range(len(data)) if i not in placed]
    _permute_rows_(data.images, full)
    data.samples = [data.samples[i] for i in full]
    data.targets = data.targets[torch.as_tensor(full, dtype=torch.long)]
    sets, start = [], 0
    for group in groups:
        sets.append(data.subset(range(start, start + len(group))))
        start += len(group)
    return sets


def _permute_rows_(x: torch.Tensor, order: Sequence[int]) -> None:
    """``x[k] = x[order[k]]`` for every k, in place, one row of extra memory: each cycle
    of the permutation is followed from its first row (torch has no in-place permute)."""
    done = [False] * len(order)
    for first in range(len(order)):
        if done[first] or order[first] == first:
            continue
        held = x[first].clone()
        row = first
        while order[row] != first:
            x[row] = x[order[row]]
            done[row] = True
            row = order[row]
        x[row] = held
        done[row] = True


def _rows_of(images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    n = len(idx)
    if n and int(idx[0]) >= 0 and torch.equal(idx, torch.arange(int(idx[0]), int(idx[0]) + n)):
        return images[int(idx[0]) : int(idx[0]) + n]
    return images.index_select(0, idx)


@dataclass
class LoadResult:
    images: ImageSet
    skipped: list[tuple[Path, str]]


def _pool(num_workers: int) -> Executor:
    if num_workers > 0:
        return ProcessPoolExecutor(num_workers)
    # No worker processes asked for: threads, as before, so the default is no slower.
    return ThreadPoolExecutor(min(8, os.cpu_count() or 1), thread_name_prefix="transferlab")


def _decoded(
    paths: Sequence[Path], prep: Preprocessing, side: int, num_workers: int
) -> Iterator[np.ndarray | str]:
    """Each image at ``side``, or why it could not be read, in order."""
    decode = functools.partial(_try_decode, prep=prep, side=side)
    with _pool(num_workers) as pool:
        for start in range(0, len(paths), _CHUNK):
            # A few images per message to a worker process (ignored by threads).
            yield from pool.map(decode, paths[start : start + _CHUNK], chunksize=8)


def _side_of(samples: Sequence[Sample], prep: Preprocessing) -> int:
    """The stored side, from the image headers (no decode)."""
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        sides = pool.map(shorter_side, [s.path for s in samples])
        return stored_side((s for s in sides if s), prep)


def _into_memory(
    paths: Sequence[Path], prep: Preprocessing, side: int, num_workers: int
) -> tuple[torch.Tensor, dict[int, str]]:
    """Decode into one preallocated tensor, in place; unreadable images leave no row."""
    pixels = torch.empty((len(paths), 3, side, side), dtype=torch.uint8)
    out = pixels.numpy()
    skipped: dict[int, str] = {}
    for i, result in enumerate(_decoded(paths, prep, side, num_workers)):
        if isinstance(result, str):
            skipped[i] = result
        else:
            out[i - len(skipped)] = result
    return pixels[: len(paths) - len(skipped)], skipped


def _onto_disk(
    paths: Sequence[Path], prep: Preprocessing, side: int, num_workers: int
) -> disk_store.DiskStore:
    def write(fh: BinaryIO) -> dict[int, str]:
        skipped: dict[int, str] = {}
        for i, result in enumerate(_decoded(paths, prep, side, num_workers)):
            if isinstance(result, str):
                skipped[i] = result
            else:
                fh.write(result.tobytes())
        return skipped

    return disk_store.open_or_build(paths, prep, side, write)


def load_images(
    samples: Sequence[Sample],
    class_to_idx: dict[str, int],
    prep: Preprocessing,
    memory_budget_mb: int,
    num_workers: int = 0,
) -> LoadResult:
    """Decode every image once (checking it): into memory if the set fits the budget at
    its stored side, else into a memory-mapped store on disk.

    Unreadable files are dropped and returned in ``skipped`` with the reason.
    """
    paths = [s.path for s in samples]
    side = _side_of(samples, prep)
    if len(samples) * 3 * side * side <= memory_budget_mb * 1024 * 1024:
        pixels, skipped = _into_memory(paths, prep, side, num_workers)
        mapped = None
    else:
        logger.info(
            "images exceed memory_cache_mb=%d; keeping them in a disk store", memory_budget_mb
        )
        store = _onto_disk(paths, prep, side, num_workers)
        pixels, mapped, skipped = None, store.pixels, store.skipped
    good = [s for i, s in enumerate(samples) if i not in skipped]
    targets = [class_to_idx[s.label] for s in good]
    images = ImageSet(good, targets, prep, pixels, num_workers, mapped, side=side)
    return LoadResult(images, [(paths[i], why) for i, why in sorted(skipped.items())])


def iterate_batches(
    data: ImageSet,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    num_workers: int | None = None,
    order: torch.Tensor | None = None,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(uint8 images, labels)`` batches in ``order`` (or shuffled, or as stored).

    Stored sets (in memory or memory-mapped) are sliced, not collated; lazy sets are
    decoded by a ``DataLoader`` with ``num_workers`` worker processes (None: the set's own
    ``num_workers``). ``pin_memory``: images in page-locked memory, for a
    ``non_blocking`` copy to a CUDA device (needs CUDA).
    """
    n = len(data)
    if order is None:
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    source = data.images if data.images is not None else data.mapped
    if source is not None:
        for start in range(0, len(order), batch_size):  # an order may be a shard of the set
            idx = order[start : start + batch_size]
            rows = idx if data.images is not None or data.rows is None else data.rows[idx]
            yield _gather(source, rows, pin_memory), data.targets[idx]
        return
    loader = DataLoader(
        Subset(data, order.tolist()),
        batch_size=batch_size,
        shuffle=False,
        num_workers=data.num_workers if num_workers is None else num_workers,
        pin_memory=pin_memory,
    )
    yield from loader


def _gather(source: torch.Tensor, rows: torch.Tensor, pin_memory: bool) -> torch.Tensor:
    """``source[rows]``, written straight into pinned memory when asked (no second copy)."""
    if not pin_memory:
        return source.index_select(0, rows)
    out = torch.empty((len(rows), *source.shape[1:]), dtype=source.dtype, pin_memory=True)
    return torch.index_select(source, 0, rows, out=out)


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

    ``num_workers``: processes that decode the images (0: threads of this process)."""
    class_to_idx = {c: i for i, c in enumerate(class_names)}
    loaded = load_images(samples, class_to_idx, prep, budget_mb, num_workers)
    if warn:
        warn_skipped(loaded.skipped)
    return loaded.images, loaded.skipped
