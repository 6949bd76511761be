"""Peak memory and time per epoch of the image store (issue 10), side by side in one run.

Each configuration runs in its own child process, one after the other, which reports its
peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, also right after the
imports and, for ``--what data``, after the decode and split; for the disk store
this includes the pages of the mapped file the kernel keeps resident, which it may drop
at any time) and its time per epoch:

- ``before``: the store as it was, re-implemented here: every image upsampled to the base
  side (256 px for 224 px input), collected in a list, stacked, then split with
  ``index_select`` (the three copies of issue 10's measurement);
- ``after``: today's store: each set at its stored side (64 px for AHE's 64x64 photos) in
  one preallocated tensor filled in place, resized on the fly by the batch transforms;
- ``disk``: today's store with ``memory_cache_mb`` set to a quarter of the decoded
  pixels, so they go to a memory-mapped store on disk (``--disk-fraction``); built in a
  fresh cache folder, then run again reusing it (``disk-reused``).

``--what probe`` runs the real thing, ``train_run`` of a linear probe (features once, then
head epochs; time per epoch = the feature pass over train+val, the part that reads
images); ``--what data`` runs only the data path: the split's decode, then ``--epochs``
passes of the training transform over the train set and the eval transform over the
validation set, at the model's input size (no model; the best pass is kept).

    .venv/bin/python benchmarks/bench_memory.py --data ../shared/datasets/ahe64/train \
        --what data --image-size 224 --epochs 3
    .venv/bin/python benchmarks/bench_memory.py --data ../shared/datasets/ahe64/train \
        --what probe --image-size 224 --images 2000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferlab.data import store
from transferlab.data.discover import Sample, discover
from transferlab.data.store import ImageSet, LoadResult
from transferlab.data.transforms import Preprocessing, to_base

CONFIGS = ("before", "after", "disk", "disk-reused")


def _old_load_images(
    samples: Sequence[Sample],
    class_to_idx: dict[str, int],
    prep: Preprocessing,
    memory_budget_mb: int,
    num_workers: int = 0,
) -> LoadResult:
    """The store before issue 10: base-side squares, a list, then one np.stack."""
    from transferlab.data.images import ImageReadError, load_image

    def decode(s: Sample) -> np.ndarray | str:
        try:
            return to_base(load_image(s.path), prep)
        except ImageReadError as exc:
            return str(exc)

    good, arrays, skipped = [], [], []
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for sample, result in zip(samples, pool.map(decode, samples), strict=True):
            if isinstance(result, str):
                skipped.append((sample.path, result))
            else:
                good.append(sample)
                arrays.append(result)
    tensor = torch.from_numpy(np.stack(arrays))
    targets = [class_to_idx[s.label] for s in good]
    return LoadResult(ImageSet(good, targets, prep, tensor, num_workers), skipped)


def _subset_folder(data: Path, images: int, folder: Path) -> Path:
    """``images`` photos of ``data`` drawn at random (seed 0), linked into class folders."""
    found = discover(data).samples
    if images and images < len(found):
        found = random.Random(0).sample(found, images)
    for s in found:
        link = folder / s.label / s.path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(s.path.resolve())
    return folder


def _config(data: Path, image_size: int, budget: int) -> Any:
    from transferlab.config import from_dict

    return from_dict(
        {},
        {
            "data.path": str(data),
            "data.memory_cache_mb": budget,
            "data.audit": False,
            "model.image_size": image_size,
            "train.strategy": "linear-probe",
            "train.head_epochs": 3,
            "train.batch_size": 64,
            "train.device": "cpu",
            "train.seed": 0,
        },
    )


def _data_epochs(cfg: Any, epochs: int) -> dict[str, Any]:
    from transferlab.data.augment import augment_batch, resolve_augment
    from transferlab.data.store import iterate_batches
    from transferlab.data.transforms import eval_batch
    from transferlab.models.registry import resolve_preprocessing
    from transferlab.setup import prepare_data

    prep = resolve_preprocessing(cfg.model.name, cfg.model.image_size)
    started = time.perf_counter()
    prepared = prepare_data(cfg, prep)
    setup_s = time.perf_counter() - started
    setup_rss = _peak_rss_mb()  # decode and split done: the store's own peak
    spec = resolve_augment(cfg.augment, "light")
    gen = torch.Generator().manual_seed(0)
    train, val = prepared.sets["train"], prepared.sets["val"]
    checksum, passes = 0.0, []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for x, _ in iterate_batches(train, 64, shuffle=True, generator=gen):
            checksum += float(augment_batch(x, prep, spec, gen).mean())
        for x, _ in iterate_batches(val, 128):
            checksum += float(eval_batch(x, prep).mean())
        passes.append(time.perf_counter() - t0)
    side = train.side
    return {
        "setup_s": setup_s,
        "epoch_s": min(passes),
        "side": side,
        "checksum": checksum,
        "setup_peak_rss_mb": setup_rss,
    }


def _probe(cfg: Any, out: Path) -> dict[str, Any]:
    import csv

    from transferlab.pipeline import train_run

    started = time.perf_counter()
    train_run(cfg, out)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    with open(out / "history.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {
        "wall_s": wall,
        "head_epoch_s": min(float(r["seconds"]) for r in rows),
        "first_epoch_s": float(rows[0]["seconds"]),  # includes the feature pass
        "test_macro_f1": metrics["macro_f1"],
        "test_accuracy": metrics["accuracy"],
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(args: argparse.Namespace) -> None:
    import transferlab.pipeline  # noqa: F401  (what every run imports, measured apart)

    imported = _peak_rss_mb()
    if args.config == "before":
        store.load_images = _old_load_images  # the old way, for this process
    cfg = _config(args.data, args.image_size, args.budget)
    data_only = args.what == "data"
    result = _data_epochs(cfg, args.epochs) if data_only else _probe(cfg, Path(args.out))
    result["import_rss_mb"] = imported  # python, torch, timm, transferlab: no data yet
    result["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


def _run(args: argparse.Namespace, config: str, budget: int, data: Path, tmp: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        config,
        "--data",
        str(data),
        "--what",
        args.what,
        "--image-size",
        str(args.image_size),
        "--epochs",
        str(args.epochs),
        "--budget",
        str(budget),
        "--out",
        str(tmp / f"run-{config}"),
    ]
    env = {**os.environ, "TRANSFERLAB_IMAGE_CACHE": str(tmp / "image-cache")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{config} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _stored_mb(data: Path, image_size: int) -> float:
    from transferlab.data.images import shorter_side
    from transferlab.data.transforms import stored_side
    from transferlab.models.registry import resolve_preprocessing

    samples = discover(data).samples
    prep = resolve_preprocessing("tf_efficientnet_lite0", image_size)
    side = stored_side((s for s in map(shorter_side, (x.path for x in samples)) if s), prep)
    return len(samples) * 3 * side * side / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--what", choices=("data", "probe"), default="data")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=0, help="a random subset (0: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--disk-fraction", type=float, default=4.0)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--child", choices=CONFIGS)
    parser.add_argument("--budget", type=int, default=4096)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.child:
        args.config = args.child
        _child(args)
        return
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        data = _subset_folder(args.data, args.images, tmp / "data")
        stored = _stored_mb(data, args.image_size)
        small = max(1, int(stored / args.disk_fraction))
        print(
            f"{len(discover(data).samples)} images; decoded store {stored:.0f} MB at the "
            f"stored side; disk runs use memory_cache_mb={small}",
            flush=True,
        )
        for config in args.configs.split(","):
            budget = small if config.startswith("disk") else 4096
            result = _run(args, config, budget, data, tmp)
            print(json.dumps({"config": config, **result}), flush=True)


if __name__ == "__main__":
    main()
