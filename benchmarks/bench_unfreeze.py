"""The unfreeze shock (issue 12): val accuracy around the head -> full fine-tuning switch.

For each dataset and each recipe variant, one ``two-stage`` run on the same seeded split;
the table gives the best head-only epoch, the first and the last full epoch and the epoch
the run kept (val accuracy). Variants pin every key they compare, so the table keeps its
meaning when the defaults change ("before" is the recipe before issue 12).

Datasets (all real, offline): ``ahe-mini`` (the bundled ``examples/ahe-mini``, what
``make demo`` trains), ``ahe`` (the first ``--per-class`` photos of each class of
``--ahe``), ``digits`` (scikit-learn's 1,797 8x8 handwritten digits written as PNGs,
upscaled with nearest-neighbour to 32 px).

    .venv/bin/python benchmarks/bench_unfreeze.py --datasets ahe-mini:224 ahe:64 digits:32 \
        --per-class 80 --variants before after --out runs/bench-unfreeze
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from transferlab.config import from_dict
from transferlab.pipeline import train_run

REPO = Path(__file__).resolve().parents[1]

# The recipe keys the variants compare, at their values before issue 12.
BEFORE: dict[str, Any] = {
    "train.lr_warmup_epochs": 0.0,
    "train.bn": "train",
    "train.backbone_lr_mult": 0.3,
    "train.layer_decay": None,
    "train.ema_decay": None,
    "train.resize_from": None,
    "train.label_smoothing": 0.1,
    "train.head_epochs": 5,
    "train.epochs": 4,
}

# progressive resizing from half the image size is added per dataset (its size varies)
RESIZE_HALF = "resize-half"

VARIANTS: dict[str, dict[str, Any]] = {
    "before": {},
    "warmup": {"train.lr_warmup_epochs": 1.0},
    "warmup-half": {"train.lr_warmup_epochs": 0.5},
    "bn-frozen": {"train.bn": "frozen"},
    "backbone-0.1": {"train.backbone_lr_mult": 0.1},
    "layer-decay": {"train.layer_decay": 0.7, "train.backbone_lr_mult": 1.0},
    "warmup+bn-frozen": {"train.lr_warmup_epochs": 1.0, "train.bn": "frozen"},
    "no-augment": {"augment.preset": "none"},
    "mild-augment": {"augment.scale_min": 0.75},
    # the faster-recipe search (issue 12), run with --set 'train.bn="frozen"' (the new base)
    "ema": {"train.ema_decay": 0.99},
    "no-smoothing": {"train.label_smoothing": 0.0},
    "backbone-1.0": {"train.backbone_lr_mult": 1.0},
    "head-2": {"train.head_epochs": 2},
    "top-3": {"train.trainable_groups": 3},
    "after": {"train.bn": "frozen"},  # the default since issue 12
}


def ahe_subset(source: Path, per_class: int, dest: Path) -> Path:
    """The first ``per_class`` photos (by name) of each class folder, copied."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        target = dest / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for photo in sorted(folder.iterdir())[:per_class]:
            shutil.copy(photo, target / photo.name)
    return dest


def digits(dest: Path, size: int = 32) -> Path:
    """scikit-learn's bundled handwritten digits as ``size`` px grey PNGs, one folder a digit."""
    from sklearn.datasets import load_digits

    data = load_digits()
    for i, (image, label) in enumerate(zip(data.images, data.target, strict=True)):
        pixels = (np.asarray(image) * (255 / 16)).astype(np.uint8)
        folder = dest / f"digit{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.NEAREST).save(
            folder / f"{i:04d}.png"
        )
    return dest


def dataset(name: str, work: Path, ahe: Path, per_class: int) -> Path:
    if name == "ahe-mini":
        return REPO / "examples" / "ahe-mini"
    target = work / f"data-{name}"
    if target.exists():
        return target
    return ahe_subset(ahe, per_class, target) if name == "ahe" else digits(target)


def summarise(history: Path) -> dict[str, Any]:
    """Best head epoch, first/last full epoch and the kept (best) epoch, by val accuracy."""
    with history.open() as fh:
        rows = list(csv.DictReader(fh))
    head = [float(r["val_accuracy"]) for r in rows if r["phase"] == "head"]
    full = [r for r in rows if r["phase"] != "head"]
    return {
        "best_head": max(head, default=float("nan")),
        "first_full": float(full[0]["val_accuracy"]) if full else float("nan"),
        "last_full": float(full[-1]["val_accuracy"]) if full else float("nan"),
        "full_losses": [round(float(r["train_loss"]), 3) for r in full],
        "head_losses": [round(float(r["train_loss"]), 3) for r in rows if r["phase"] == "head"],
    }


def run_one(data: Path, size: int, overrides: dict[str, Any], out: Path) -> dict[str, Any]:
    cfg = from_dict(
        {},
        {
            "data.path": str(data),
            "data.audit": False,  # the audit does not change training; it only costs time
            "model.image_size": size,
            **BEFORE,
            **overrides,
        },
    )
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    result = train_run(cfg, out, write_report=False)
    row = summarise(out / "history.csv")
    training = result.metrics["training"]
    row["kept_epoch"] = training["best_epoch"]
    with (out / "history.csv").open() as fh:
        kept = [r for r in csv.DictReader(fh) if int(r["epoch"]) == training["best_epoch"]]
    row["kept"] = float(kept[0]["val_accuracy"]) if kept else float("nan")
    row["kept_phase"] = kept[0]["phase"] if kept else ""
    row["test_accuracy"] = result.metrics["accuracy"]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--datasets",
        nargs="+",
        default=["ahe-mini:224", "ahe:64", "digits:32"],
        help="NAME:IMAGE_SIZE, NAME one of ahe-mini, ahe, digits",
    )
    ap.add_argument(
        "--variants", nargs="+", default=["before", "after"], choices=[*VARIANTS, RESIZE_HALF]
    )
    ap.add_argument("--ahe", type=Path, default=REPO.parent / "shared/datasets/ahe64/train")
    ap.add_argument("--per-class", type=int, default=80, help="ahe: photos per class")
    ap.add_argument("--set", nargs="*", default=[], help="KEY=JSON applied to every variant")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-unfreeze"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    extra = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}
    results: list[dict[str, Any]] = []
    for spec in args.datasets:
        name, _, size = spec.partition(":")
        data = dataset(name, args.out, args.ahe, args.per_class)
        for variant in args.variants:
            chosen = (
                {"train.resize_from": int(size) // 2}
                if variant == RESIZE_HALF
                else VARIANTS[variant]
            )
            row = run_one(data, int(size), chosen | extra, args.out / f"{name}-{size}-{variant}")
            row |= {"dataset": f"{name} {size} px", "variant": variant}
            results.append(row)
            print(json.dumps(row), flush=True)
            (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print("| data | variant | best head epoch | first full | last full | kept (epoch) | s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['dataset']} | {r['variant']} | {r['best_head']:.3f} | {r['first_full']:.3f} "
            f"| {r['last_full']:.3f} | {r['kept']:.3f} ({r['kept_phase']} {r['kept_epoch']}) "
            f"| {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
