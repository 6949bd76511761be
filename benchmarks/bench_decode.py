"""Per-epoch decoding of a dataset too big for ``memory_cache_mb`` (issue 9): how fast
``iterate_batches`` delivers batches with ``data.num_workers`` = 0, 1, 2, 4 (a torch
``DataLoader`` with that many worker processes, started anew each epoch as the training
loop does), against the alternative not taken: a pool of as many threads.

Only decoding is timed (JPEG -> resized, centre-cropped uint8 base image, stacked into
batches); no model runs. Each setting makes ``--epochs`` passes over the same images and
reports the best pass (other work on a shared machine only ever slows a pass down).
``--photo-size 1024`` first re-encodes the chosen photos at 1024x768 (JPEG quality 90),
standing in for camera-sized photos.

    .venv/bin/python benchmarks/bench_decode.py --data ../shared/datasets/ahe64/train \
        --images 1000 --image-size 224 --workers 0,1,2,4 --epochs 5
    .venv/bin/python benchmarks/bench_decode.py --data ../shared/datasets/ahe64/train \
        --images 300 --photo-size 1024 --workers 0,1,2,4 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from transferlab.data.discover import Sample, discover
from transferlab.data.store import ImageSet, iterate_batches
from transferlab.models.registry import resolve_preprocessing


def _enlarged(samples: list[Sample], width: int, folder: Path) -> list[Sample]:
    """Copies of the photos at ``width`` x 3/4 ``width`` pixels, as JPEG files."""
    out = []
    for i, s in enumerate(samples):
        path = folder / f"{i}.jpg"
        img = Image.open(s.path).convert("RGB").resize((width, width * 3 // 4), Image.BICUBIC)
        img.save(path, quality=90)
        out.append(Sample(path, s.label))
    return out


def _lazy_set(data: Path, n: int, image_size: int, photo_size: int, tmp: Path) -> ImageSet:
    """``n`` photos drawn at random (seed 0), left on disk: a lazy set, decoded per batch
    (a run over ``memory_cache_mb`` now decodes once into a disk store instead;
    ``bench_memory.py`` measures that)."""
    found = discover(data)
    samples = random.Random(0).sample(found.samples, min(n, len(found.samples)))
    if photo_size:
        samples = _enlarged(samples, photo_size, tmp)
    prep = resolve_preprocessing("tf_efficientnet_lite0", image_size)
    index = {c: i for i, c in enumerate(found.classes)}
    images = ImageSet(samples, [index[s.label] for s in samples], prep)
    assert not images.in_memory
    return images


def _threads(images: ImageSet, batch_size: int, workers: int) -> Iterator[torch.Tensor]:
    """Batches decoded by a pool of ``workers`` threads (0: in this thread), in order."""

    def decode(i: int) -> torch.Tensor:
        return images[i][0]

    with ThreadPoolExecutor(max(1, workers)) as pool:
        decoded = (
            pool.map(decode, range(len(images))) if workers else map(decode, range(len(images)))
        )
        batch: list[torch.Tensor] = []
        for x in decoded:
            batch.append(x)
            if len(batch) == batch_size:
                yield torch.stack(batch)
                batch = []
        if batch:
            yield torch.stack(batch)


def _best_pass(batches: Callable[[], Iterable[torch.Tensor]], epochs: int) -> float:
    """Seconds of the fastest of ``epochs`` passes over every batch."""
    best = float("inf")
    for _ in range(epochs):
        t0 = time.perf_counter()
        seen = sum(len(x) for x in batches())
        best = min(best, time.perf_counter() - t0)
        assert seen > 0
    return best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/ahe64/train"))
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", default="0,1,2,4", help="comma-separated worker counts")
    ap.add_argument("--epochs", type=int, default=3, help="passes per setting (best counts)")
    ap.add_argument("--photo-size", type=int, default=0, help="re-encode photos this wide")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        _measure(
            args, _lazy_set(args.data, args.images, args.image_size, args.photo_size, Path(tmp))
        )


def _measure(args: argparse.Namespace, images: ImageSet) -> None:
    n, bs = len(images), args.batch_size
    size = Image.open(images.samples[0].path).size
    print(
        f"{n} photos of {size[0]}x{size[1]} px, {args.image_size} px input "
        f"({images.prep.base_size} px decoded), batch {bs}, {os.cpu_count()} CPUs"
    )
    print("| num_workers | iterate_batches (processes) | thread pool (not taken) |")
    print("| ---: | ---: | ---: |")
    base = 0.0
    for w in (int(v) for v in args.workers.split(",")):
        ours = _best_pass(
            lambda w=w: (x for x, _ in iterate_batches(images, bs, num_workers=w)), args.epochs
        )
        threads = _best_pass(lambda w=w: _threads(images, bs, w), args.epochs)
        base = base or ours
        print(
            f"| {w} | {n / ours:.0f} images/s ({base / ours:.2f}x) "
            f"| {n / threads:.0f} images/s ({base / threads:.2f}x) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
