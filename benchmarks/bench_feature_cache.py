"""Linear probe with vs without the feature cache, side by side in one run (issue 3).

All runs train the same head for the same epochs on the same split; the cached run
computes the frozen backbone's features once (in epoch 1) and trains on them, the
uncached one runs the backbone every epoch, and a later run with ``feature_cache_dir``
set reads the features an earlier run stored there. Reports per-epoch seconds from each run's
``history.csv``, the ratios, and that the metrics agree.

    .venv/bin/python benchmarks/bench_feature_cache.py --data ../shared/datasets/ahe64/train \
        --per-class 200 --epochs 10 --out runs/bench-cache
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
from pathlib import Path
from statistics import mean

from transferlab.config import from_dict
from transferlab.data.discover import discover
from transferlab.data.split import SplitSamples, stratified_split, write_split_csv
from transferlab.pipeline import train_run


def _subset(data: Path, per_class: int) -> SplitSamples:
    found = discover(data)
    rng = random.Random(0)
    by_class: dict[str, list] = {}
    for s in found.samples:
        by_class.setdefault(s.label, []).append(s)
    picked = [
        s for group in by_class.values() for s in rng.sample(group, min(per_class, len(group)))
    ]
    return stratified_split(picked, 0.2, 0.0, seed=0)


def _epoch_seconds(run: Path) -> list[float]:
    with (run / "history.csv").open() as fh:
        return [float(r["seconds"]) for r in csv.DictReader(fh)]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/ahe64/train"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench-cache"))
    ap.add_argument("--per-class", type=int, default=200, help="images per class (0: all)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=128)
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    split = (
        _subset(args.data, args.per_class)
        if args.per_class
        else stratified_split(discover(args.data).samples, 0.2, 0.0, seed=0)
    )
    split_csv = args.out / "split.csv"
    write_split_csv(split, split_csv, args.data.resolve())
    results = {}
    disk = args.out / "feature-cache"
    variants = {
        "cached": {"train.feature_cache": True},
        "uncached": {"train.feature_cache": False},
        "fill-disk": {"train.feature_cache_dir": str(disk)},  # fills the disk cache
        "from-disk": {"train.feature_cache_dir": str(disk)},  # a later run reads it
    }
    for name, extra in variants.items():
        cfg = from_dict(
            {},
            {
                "data.path": str(args.data),
                "data.split_file": str(split_csv),
                "model.image_size": args.image_size,
                "train.strategy": "linear-probe",
                "train.epochs": args.epochs,
                **extra,
            },
        )
        run = args.out / name
        metrics = train_run(cfg, run).metrics
        secs = _epoch_seconds(run)
        if name == "fill-disk":
            continue
        results[name] = {
            "epoch_seconds": secs,
            "mean_epoch": mean(secs),
            "total": sum(secs),
            "steady_epoch": mean(secs[1:]) if len(secs) > 1 else secs[0],
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
        }
    c, u, d = results["cached"], results["uncached"], results["from-disk"]
    summary = {
        "images": {k: len(v) for k, v in split.items()},
        "results": results,
        "ratio_mean_epoch": u["mean_epoch"] / c["mean_epoch"],
        "ratio_steady_epoch": u["steady_epoch"] / c["steady_epoch"],
        "ratio_mean_epoch_from_disk": u["mean_epoch"] / d["mean_epoch"],
        "metric_diff": abs(c["macro_f1"] - u["macro_f1"]),
        "metric_diff_from_disk": abs(d["macro_f1"] - u["macro_f1"]),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"images: {summary['images']}")
    for name, r in results.items():
        print(
            f"{name:9} mean epoch {r['mean_epoch']:8.3f}s  epochs 2..N {r['steady_epoch']:8.4f}s"
            f"  total {r['total']:7.1f}s  macro-F1 {r['macro_f1']:.4f}"
        )
    print(
        f"per-epoch ratio (mean over {args.epochs} epochs, extraction included): "
        f"{summary['ratio_mean_epoch']:.1f}x"
    )
    print(f"per-epoch ratio (epochs 2..{args.epochs}): {summary['ratio_steady_epoch']:.0f}x")
    print(
        "per-epoch ratio, a later run with features on disk (mean over all epochs): "
        f"{summary['ratio_mean_epoch_from_disk']:.0f}x"
    )
    print(f"|macro-F1 cached - uncached| = {summary['metric_diff']:.2e}")
    print(f"|macro-F1 from disk - uncached| = {summary['metric_diff_from_disk']:.2e}")


if __name__ == "__main__":
    main()
