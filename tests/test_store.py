"""The image store: decoding once, and decoding from disk each epoch in ``num_workers``
worker processes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from helpers import CLASSES
from transferlab.data.discover import discover
from transferlab.data.store import ImageSet, decode_all, iterate_batches
from transferlab.data.transforms import Preprocessing

PREP = Preprocessing(56, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class PidLoggingSet(ImageSet):
    """A set on disk that notes, in a file, the process that decodes each of its images."""

    log: Path

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
        return super().__getitem__(i)

    def pids(self) -> list[int]:
        return [int(v) for v in self.log.read_text(encoding="utf-8").split()]


def _lazy_set(data: Path, workers: int, log: Path) -> PidLoggingSet:
    """Every photo under ``data``, too big for a 0 MB memory budget: decoded each epoch."""
    images, skipped = decode_all(
        discover(data).samples, list(CLASSES), PREP, 0, num_workers=workers
    )
    assert skipped == [] and not images.in_memory and images.num_workers == workers
    logged = PidLoggingSet(images.samples, images.targets.tolist(), PREP, None, workers)
    logged.log = log
    return logged


def test_num_workers_decodes_in_that_many_processes(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    data = class_folders(per_class=4)
    serial = _lazy_set(data, 0, tmp_path / "serial.log")
    expected = list(iterate_batches(serial, 3))
    assert set(serial.pids()) == {os.getpid()}  # 0: decoded by the calling process
    parallel = _lazy_set(data, 2, tmp_path / "parallel.log")
    batches = list(iterate_batches(parallel, 3))  # 4 batches, dealt out to the 2 workers
    pids = parallel.pids()
    assert len(pids) == 12 and os.getpid() not in pids
    assert len(set(pids)) == 2
    for (x, y), (sx, sy) in zip(batches, expected, strict=True):
        assert torch.equal(x, sx) and torch.equal(y, sy)  # same images, same order


def test_subsets_keep_the_worker_count_and_an_explicit_count_wins(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    images = _lazy_set(class_folders(per_class=2), 2, tmp_path / "pids.log")
    assert images.subset([0, 2]).num_workers == 2
    order = torch.tensor([5, 0, 3, 1, 4, 2])
    batches = list(iterate_batches(images, 4, order=order, num_workers=0))
    assert set(images.pids()) == {os.getpid()}
    assert [len(y) for _, y in batches] == [4, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), images.targets[order])


def test_in_memory_sets_are_sliced_without_decoding(class_folders: Callable[..., Path]) -> None:
    samples = discover(class_folders(per_class=2)).samples
    images, _ = decode_all(samples, list(CLASSES), PREP, 64, num_workers=2)
    assert images.in_memory and images.num_workers == 2
    (x, y), *_ = iterate_batches(images, 6)
    assert x.shape == (6, 3, PREP.base_size, PREP.base_size)
    assert y.tolist() == images.targets.tolist()
