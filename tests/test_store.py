"""The image store: decoding once, and decoding from disk each epoch in ``num_workers``
worker processes."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers import CLASSES, bad_files, invoke, make_image
from transferlab.data.discover import Sample, discover
from transferlab.data.images import load_image
from transferlab.data.store import ImageSet, decode_all, iterate_batches
from transferlab.data.transforms import Preprocessing, to_base

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


# --- stored at the side the images need (issue 10) ---------------------------------------

PREP96 = Preprocessing(96, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # base side 109


def test_photos_are_stored_at_their_own_side_not_upsampled_to_the_base(
    class_folders: Callable[..., Path],
) -> None:
    samples = discover(class_folders(per_class=2)).samples  # 64x64 photos
    images, _ = decode_all(samples, list(CLASSES), PREP96, 64)
    assert PREP96.base_size == 109
    assert images.images is not None and images.images.shape == (6, 3, 64, 64)
    # Stored as-is: the centre square of a 64x64 photo is the photo.
    first = torch.from_numpy(to_base(load_image(images.samples[0].path), PREP96, side=64))
    assert torch.equal(images.images[0], first)


def test_a_mixed_set_is_stored_at_the_largest_shorter_side_capped_at_the_base(
    tmp_path: Path,
) -> None:
    small = [make_image(tmp_path / "a" / "1.png", (40, 30)), make_image(tmp_path / "b" / "2.png")]
    tall = make_image(tmp_path / "a" / "3.png", (64, 80))
    samples = [Sample(p, p.parent.name) for p in (*small, tall)]
    images, _ = decode_all(samples, ["a", "b"], PREP96, 64)
    assert images.images is not None and images.images.shape[-2:] == (64, 64)
    huge = make_image(tmp_path / "b" / "4.png", (300, 200))
    images, _ = decode_all([*samples, Sample(huge, "b")], ["a", "b"], PREP96, 64)
    assert images.images is not None and images.images.shape[-2:] == (109, 109)


def test_a_subset_of_consecutive_rows_is_a_view_of_the_store(
    class_folders: Callable[..., Path],
) -> None:
    samples = discover(class_folders(per_class=2)).samples
    images, _ = decode_all(samples, list(CLASSES), PREP96, 64)
    assert images.images is not None
    part = images.subset([2, 3, 4])
    assert part.images is not None
    assert part.images.untyped_storage().data_ptr() == images.images.untyped_storage().data_ptr()
    assert torch.equal(part.images, images.images[2:5])
    picked = images.subset([4, 0])  # any other order: only those rows are copied
    assert picked.images is not None and torch.equal(picked.images, images.images[[4, 0]])
    assert [s.path for s in picked.samples] == [samples[4].path, samples[0].path]


# --- a memory-mapped store on disk when the images do not fit memory_cache_mb -------------


@pytest.fixture
def image_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "image-cache"
    monkeypatch.setenv("TRANSFERLAB_IMAGE_CACHE", str(cache))
    return cache


def _store_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.u8"))


def test_a_set_over_memory_cache_mb_is_decoded_once_into_a_disk_store(
    class_folders: Callable[..., Path], image_cache: Path
) -> None:
    samples = discover(class_folders(per_class=3)).samples
    in_ram, _ = decode_all(samples, list(CLASSES), PREP96, 64)
    on_disk, skipped = decode_all(samples, list(CLASSES), PREP96, 0, num_workers=2)
    assert skipped == [] and in_ram.in_memory and not on_disk.in_memory
    assert on_disk.images is None  # nothing of it is held as a tensor in RAM
    assert in_ram.images is not None
    (store,) = _store_files(image_cache)
    assert store.stat().st_size == 9 * 3 * 64 * 64  # at the stored side, not the base side
    order = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    for (a, ya), (b, yb) in zip(
        iterate_batches(in_ram, 4, order=order),
        iterate_batches(on_disk, 4, order=order),
        strict=True,
    ):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    part = on_disk.subset([7, 2])
    assert torch.equal(next(iterate_batches(part, 2))[0], in_ram.images[[7, 2]])
    assert torch.equal(part[1][0], in_ram.images[2])


def test_the_disk_store_is_reused_until_an_image_changes(
    class_folders: Callable[..., Path], image_cache: Path
) -> None:
    data = class_folders(per_class=2)
    bad = set(bad_files(data / "apse").values())
    samples = discover(data).samples
    first, skipped = decode_all(samples, list(CLASSES), PREP96, 0)
    (store,) = _store_files(image_cache)
    built = store.stat()
    again, skipped_again = decode_all(samples, list(CLASSES), PREP96, 0)
    assert _store_files(image_cache) == [store]
    assert (store.stat().st_ino, store.stat().st_mtime_ns) == (built.st_ino, built.st_mtime_ns)
    assert skipped_again == skipped and {p for p, _ in skipped} == bad  # kept with the store
    assert torch.equal(next(iterate_batches(again, 6))[0], next(iterate_batches(first, 6))[0])
    changed = samples[0].path
    make_image(changed, (64, 64), (0, 0, 255), format="JPEG")
    rebuilt, _ = decode_all(samples, list(CLASSES), PREP96, 0)
    assert len(_store_files(image_cache)) == 2
    assert rebuilt[0][0].float().mean(dim=(1, 2)).argmax() == 2  # now blue


def _open_store(data: Path, log: Path, ready: Barrier) -> None:
    """A second process (a rank) opening the disk store, noting whether it built it."""
    handler = logging.FileHandler(log)
    logging.getLogger("transferlab").addHandler(handler)
    logging.getLogger("transferlab").setLevel(logging.INFO)
    ready.wait()
    decode_all(discover(data).samples, list(CLASSES), PREP96, 0)
    handler.close()


def test_two_processes_opening_the_disk_store_at_once_build_it_once(
    class_folders: Callable[..., Path], image_cache: Path, tmp_path: Path
) -> None:
    data = class_folders(per_class=8)
    fork = multiprocessing.get_context("fork")
    ready = fork.Barrier(2)
    logs = [tmp_path / f"rank{i}.log" for i in range(2)]
    ranks = [fork.Process(target=_open_store, args=(data, log, ready)) for log in logs]
    for rank in ranks:
        rank.start()
    for rank in ranks:
        rank.join(60)
        assert rank.exitcode == 0
    said = "".join(log.read_text(encoding="utf-8") for log in logs)
    assert said.count("decoded 24 images into") == 1
    assert said.count("24 decoded images from") == 1
    (store,) = _store_files(image_cache)
    assert store.stat().st_size == 24 * 3 * 64 * 64


SCRATCH = ["--model", "convnet1", "--weights", "none", "--strategy", "scratch"]
TINY_RUN = ["--image-size", "64", "--epochs", "2", "--batch-size", "8", "--device", "cpu"]


def test_training_from_the_disk_store_gives_the_in_ram_metrics(
    class_folders: Callable[..., Path],
    image_cache: Path,
    tmp_path: Path,
    restore_transferlab_logging: None,
) -> None:
    data = class_folders(per_class=6)
    runs = {}
    for name, budget in (("ram", 4096), ("disk", 0)):
        out = tmp_path / name
        args = ("--set", f"data.memory_cache_mb={budget}", "--seed", "0")
        code, _, err = invoke("train", data, "--out", out, *SCRATCH, *TINY_RUN, *args)
        assert code == 0, err
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        del metrics["training"]["train_seconds"], metrics["data_audit"]["seconds"]
        runs[name] = metrics
    assert len(_store_files(image_cache)) == 1  # only the disk run made one
    assert runs["disk"] == runs["ram"]  # every metric, the confusion matrix, calibration


def test_num_workers_decode_the_store_in_that_many_processes(
    class_folders: Callable[..., Path],
    image_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transferlab.data import store

    log, real = tmp_path / "pids.log", store._decode

    def noting(path: Path, prep: Preprocessing, side: int | None = None) -> Any:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
        return real(path, prep, side)

    monkeypatch.setattr(store, "_decode", noting)  # worker processes fork with it
    samples = discover(class_folders(per_class=4)).samples
    for budget in (64, 0):  # into memory, then onto disk
        log.unlink(missing_ok=True)
        images, _ = decode_all(samples, list(CLASSES), PREP96, budget, num_workers=2)
        pids = [int(v) for v in log.read_text(encoding="utf-8").split()]
        assert len(pids) == 12 and os.getpid() not in pids and len(set(pids)) == 2
        assert images.in_memory == (budget > 0)
    log.unlink()
    decode_all(samples, list(CLASSES), PREP96, 0, num_workers=2)  # the store is reused
    assert not log.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked memory needs CUDA")
def test_pin_memory_yields_page_locked_batches_of_every_kind_of_set(
    class_folders: Callable[..., Path], image_cache: Path
) -> None:
    samples = discover(class_folders(per_class=2)).samples
    in_ram, _ = decode_all(samples, list(CLASSES), PREP96, 64)
    on_disk, _ = decode_all(samples, list(CLASSES), PREP96, 0)
    lazy = ImageSet(in_ram.samples, in_ram.targets.tolist(), PREP96, side=64)
    expected = next(iterate_batches(in_ram, 6))[0]
    for data in (in_ram, on_disk.subset(range(6)), lazy):
        x, _ = next(iterate_batches(data, 6, pin_memory=True))
        assert x.is_pinned() and torch.equal(x, expected)


def test_the_split_sets_are_views_of_one_store_reordered_in_place(
    class_folders: Callable[..., Path],
) -> None:
    from transferlab.config import from_dict
    from transferlab.setup import prepare_split

    cfg = from_dict({"data": {"path": str(class_folders(per_class=5))}})
    split, sets, _ = prepare_split(cfg, PREP96)
    storages = {
        s.images.untyped_storage().data_ptr() for s in sets.values() if s.images is not None
    }
    assert len(storages) == 1  # train, val and test: no copy of the store
    assert sum(len(s) for s in sets.values()) == 15
    for name, data in sets.items():
        assert [s.path for s in data.samples] == [s.path for s in getattr(split, name)]
        assert data.images is not None
        for sample, image, target in zip(data.samples, data.images, data.targets, strict=True):
            assert torch.equal(image, torch.from_numpy(_decoded(sample.path)))
            assert split.classes[int(target)] == sample.label


def _decoded(path: Path) -> np.ndarray:
    return to_base(load_image(path), PREP96, side=64)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 50])
def test_rows_are_permuted_in_place_like_indexing(n: int) -> None:
    from transferlab.data.store import _permute_rows_

    for seed in range(5):
        x = torch.randint(0, 255, (n, 3, 2, 2), dtype=torch.uint8)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        expected, ptr = x[order], x.data_ptr()
        _permute_rows_(x, order.tolist())
        assert torch.equal(x, expected) and x.data_ptr() == ptr
