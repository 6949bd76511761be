"""The image store: decoding once, and decoding from disk each epoch in ``num_workers`` threads."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from helpers import CLASSES
from transferlab.data import store
from transferlab.data.discover import discover
from transferlab.data.store import ImageSet, decode_all, iterate_batches
from transferlab.data.transforms import Preprocessing

PREP = Preprocessing(56, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _lazy_set(data: Path, workers: int) -> ImageSet:
    """Every photo under ``data``, too big for a 0 MB memory budget: decoded each epoch."""
    samples = discover(data).samples
    images, skipped = decode_all(samples, list(CLASSES), PREP, 0, num_workers=workers)
    assert skipped == [] and not images.in_memory
    return images


@pytest.fixture
def decode_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], list[str]]]:
    """Record the thread of every per-epoch decode; the first ``together`` decodes must all
    be in flight at the same time (a barrier), which only ``together`` threads can do."""
    names: list[str] = []

    def watch(together: int) -> list[str]:
        real = store._decode
        count = itertools.count(1)
        barrier = threading.Barrier(together, timeout=20)

        def decode(path: Path, prep: Preprocessing) -> object:
            names.append(threading.current_thread().name)
            if next(count) <= together:
                barrier.wait()  # raises BrokenBarrierError if fewer threads decode at once
            return real(path, prep)

        monkeypatch.setattr(store, "_decode", decode)
        return names

    yield watch


def test_num_workers_decodes_in_that_many_threads(
    class_folders: Callable[..., Path], decode_threads: Callable[[int], list[str]]
) -> None:
    data = class_folders(per_class=4)
    serial = list(iterate_batches(_lazy_set(data, 0), 5))
    threaded_set = _lazy_set(data, 3).subset(range(12))
    assert threaded_set.num_workers == 3  # subsets keep the setting
    names = decode_threads(3)
    batches = list(iterate_batches(threaded_set, 5))
    assert len(names) == 12
    assert threading.current_thread().name not in names
    assert len(set(names)) == 3  # three decodes were in flight at once, in three threads
    for (x, y), (sx, sy) in zip(batches, serial, strict=True):
        assert torch.equal(x, sx) and torch.equal(y, sy)  # same images, same order


def test_zero_workers_decode_on_the_calling_thread(
    class_folders: Callable[..., Path], decode_threads: Callable[[int], list[str]]
) -> None:
    images = _lazy_set(class_folders(per_class=2), 0)
    names = decode_threads(1)
    order = torch.tensor([5, 0, 3, 1, 4, 2])
    batches = list(iterate_batches(images, 4, order=order))
    assert names == [threading.current_thread().name] * 6
    assert [len(y) for _, y in batches] == [4, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), images.targets[order])


def test_an_explicit_worker_count_overrides_the_sets(
    class_folders: Callable[..., Path], decode_threads: Callable[[int], list[str]]
) -> None:
    images = _lazy_set(class_folders(per_class=2), 2)
    names = decode_threads(1)
    list(iterate_batches(images, 3, num_workers=0))
    assert set(names) == {threading.current_thread().name}


def test_in_memory_sets_are_sliced_without_decoding(
    class_folders: Callable[..., Path], decode_threads: Callable[[int], list[str]]
) -> None:
    samples = discover(class_folders(per_class=2)).samples
    images, _ = decode_all(samples, list(CLASSES), PREP, 64, num_workers=2)
    assert images.in_memory and images.num_workers == 2
    names = decode_threads(1)
    (x, y), *_ = iterate_batches(images, 6)
    assert names == [] and x.shape == (6, 3, PREP.base_size, PREP.base_size)
    assert y.tolist() == images.targets.tolist()
