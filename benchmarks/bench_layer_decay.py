"""Layer-wise LR decay (``train.layer_decay``) against none, side by side in one run (issue 9).

Both runs use the default recipe (two-stage: head epochs on cached features, then the whole
network at the backbone LR) on tf_efficientnet_lite0 with its packaged ImageNet weights,
the same photos, the same stratified 80/20 split (seed 0), the same seed and epochs; the
only difference is ``train.layer_decay``: with 0.75 each layer group below the head gets
0.75x the LR of the group above it (the stem of lite0, 9 groups down, 0.075x).

A subset (``--per-class`` photos of each class, drawn with seed 0) keeps it within
minutes on a busy CPU:

    .venv/bin/python benchmarks/bench_layer_decay.py --data ../shared/datasets/ahe64/train \
        --per-class 200 --image-size 96 --head-epochs 2 --epochs 4 --out runs/bench-layer-decay
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path

from transferlab.config import from_dict
from transferlab.data.discover import Sample, discover
from transferlab.data.split import stratified_split, write_split_csv
from transferlab.pipeline import train_run


def subset(samples: list[Sample], per_class: int, seed: int = 0) -> list[Sample]:
    """``per_class`` photos of each class, the same ones on every run."""
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: str(s.path)):
        by_class[s.label].append(s)
    rng = random.Random(seed)
    return [s for label in sorted(by_class) for s in rng.sample(by_class[label], per_class)]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/ahe64/train"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench-layer-decay"))
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--head-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4, help="full fine-tuning epochs")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--layer-decay", type=float, default=0.75)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)

    root = args.data.resolve()
    split = stratified_split(subset(discover(root).samples, args.per_class), 0.2, 0.0, seed=0)
    split_csv = args.out / "split.csv"
    write_split_csv(split, split_csv, root)
    results = {}
    for name, decay in (("none", None), (f"layer_decay {args.layer_decay}", args.layer_decay)):
        cfg = from_dict(
            {},
            {
                "data.path": str(root),
                "data.split_file": str(split_csv),
                "model.image_size": args.image_size,
                "train.head_epochs": args.head_epochs,
                "train.epochs": args.epochs,
                "train.batch_size": args.batch_size,
                "train.layer_decay": decay,
                "train.seed": 0,
            },
        )
        run_dir = args.out / ("decay" if decay else "none")
        shutil.rmtree(run_dir, ignore_errors=True)
        t0 = time.perf_counter()
        metrics = train_run(cfg, run_dir).metrics
        results[name] = {
            "macro_f1": metrics["macro_f1"],
            "accuracy": metrics["accuracy"],
            "best_epoch": metrics["training"]["best_epoch"],
            "minutes": (time.perf_counter() - t0) / 60,
        }
        logging.info("%s: %s", name, results[name])
    images = {k: len(v) for k, v in split.items()}
    (args.out / "summary.json").write_text(
        json.dumps(
            {
                "args": vars(args) | {"data": str(root), "out": str(args.out)},
                "images": images,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"train {images['train']}, val {images['val']} photos ({args.per_class} per class)")
    print(f"{'':20}{'macro-F1':>10}{'accuracy':>10}{'best ep.':>10}{'minutes':>10}")
    for name, r in results.items():
        print(
            f"{name:20}{r['macro_f1']:>10.4f}{r['accuracy']:>10.4f}"
            f"{r['best_epoch']:>10}{r['minutes']:>10.1f}"
        )


if __name__ == "__main__":
    main()
