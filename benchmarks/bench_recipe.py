"""Default recipe vs a plain timm + PyTorch loop, side by side in one run (issue 2).

Both use tf_efficientnet_lite0 with the same packaged ImageNet weights, the same
resolution, the same stratified 80/20 split (seed 0) of the AHE-64 data and the same
number of full fine-tuning epochs. The plain loop is the way timm's docs train: an
ImageFolder-style dataset with ``timm.data.create_transform``, a DataLoader, one
head epoch with the backbone frozen, then full epochs with AdamW + cosine.

    .venv/bin/python benchmarks/bench_recipe.py --data ../shared/datasets/ahe64/train \
        --image-size 128 --epochs 3 --out runs/bench-recipe
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path

import torch
from PIL import Image
from timm.data import create_transform
from torch.utils.data import DataLoader, Dataset

from transferlab.config import from_dict
from transferlab.data.discover import discover
from transferlab.data.split import stratified_split, write_split_csv
from transferlab.metrics import classification_report
from transferlab.models.registry import create_model, resolve_preprocessing
from transferlab.pipeline import train_run

MODEL = "tf_efficientnet_lite0"


class FileDataset(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, rows: list[tuple[Path, int]], transform: object) -> None:
        self.rows, self.transform = rows, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.rows[i]
        return self.transform(Image.open(path).convert("RGB")), label  # type: ignore[operator]


def plain_loop(
    train_rows: list[tuple[Path, int]],
    val_rows: list[tuple[Path, int]],
    classes: list[str],
    size: int,
    epochs: int,
    batch_size: int,
    workers: int,
) -> dict[str, object]:
    torch.manual_seed(0)
    start = time.perf_counter()
    model, _ = create_model(MODEL, len(classes), "imagenet", drop_rate=0.2)
    prep = resolve_preprocessing(MODEL, size)
    common = {
        "input_size": (3, size, size),
        "mean": prep.mean,
        "std": prep.std,
        "interpolation": prep.interpolation,
        "crop_pct": prep.crop_pct,
    }
    train_tf = create_transform(**common, is_training=True, hflip=0.5)
    eval_tf = create_transform(**common, is_training=False)
    train_dl = DataLoader(
        FileDataset(train_rows, train_tf),
        batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=False,
    )
    val_dl = DataLoader(FileDataset(val_rows, eval_tf), batch_size * 2, num_workers=workers)
    loss_fn = torch.nn.CrossEntropyLoss()
    history = []

    def run_epoch(params: list[torch.nn.Parameter], lr: float, n_epochs: int) -> None:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n_epochs * len(train_dl))
        for _ in range(n_epochs):
            t0 = time.perf_counter()
            model.train()
            for x, y in train_dl:
                loss = loss_fn(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            history.append(time.perf_counter() - t0)
            logging.info("plain epoch %d done in %.0fs", len(history), history[-1])

    for p in model.parameters():
        p.requires_grad_(False)
    head = list(model.get_classifier().parameters())
    for p in head:
        p.requires_grad_(True)
    run_epoch(head, 1e-3, 1)
    for p in model.parameters():
        p.requires_grad_(True)
    run_epoch(list(model.parameters()), 3e-4, epochs)
    model.eval()
    preds, targets = [], []
    with torch.inference_mode():
        for x, y in val_dl:
            preds.append(model(x).argmax(1))
            targets.append(y)
    report = classification_report(torch.cat(targets).numpy(), torch.cat(preds).numpy(), classes)
    report["seconds"] = time.perf_counter() - start
    report["epoch_seconds"] = history
    return report


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/ahe64/train"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench-recipe"))
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3, help="full fine-tuning epochs (both)")
    ap.add_argument("--head-epochs", type=int, default=5, help="ours: cached head epochs")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="plain loop DataLoader workers")
    ap.add_argument("--only", choices=["ours", "plain"], default=None)
    ap.add_argument("--set", nargs="*", default=[], help="extra dotted config keys for ours")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    found = discover(args.data)
    split = stratified_split(found.samples, 0.2, 0.0, seed=0)
    split_csv = args.out / "split.csv"
    write_split_csv(split, split_csv, args.data.resolve())
    classes = split.classes
    results: dict[str, dict[str, object]] = {}

    if args.only in (None, "ours"):
        overrides = {
            "data.path": str(args.data),
            "data.split_file": str(split_csv),
            "model.image_size": args.image_size,
            "train.epochs": args.epochs,
            "train.head_epochs": args.head_epochs,
            "train.batch_size": args.batch_size,
        }
        for item in args.set:
            key, _, value = item.partition("=")
            overrides[key] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
        cfg = from_dict({}, overrides)
        run_dir = args.out / "ours"
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        metrics = train_run(cfg, run_dir).metrics
        metrics["seconds"] = time.perf_counter() - t0
        results["ours"] = metrics
    if args.only in (None, "plain"):
        idx = {c: i for i, c in enumerate(classes)}
        rows = {k: [(s.path, idx[s.label]) for s in v] for k, v in split.items()}
        results["plain"] = plain_loop(
            rows["train"],
            rows["val"],
            classes,
            args.image_size,
            args.epochs,
            args.batch_size,
            args.workers,
        )

    summary = {
        name: {
            "accuracy": r["accuracy"],
            "macro_f1": r["macro_f1"],
            "seconds": r["seconds"],
            "per_class_f1": {c: v["f1"] for c, v in r["per_class"].items()},
        }  # type: ignore[union-attr]
        for name, r in results.items()
    }
    (args.out / "summary.json").write_text(
        json.dumps(
            {
                "args": vars(args) | {"data": str(args.data), "out": str(args.out)},
                "results": summary,
            },
            indent=2,
        )
    )
    print(f"{'':8}{'macro-F1':>10}{'accuracy':>10}{'minutes':>10}")
    for name, r in summary.items():
        print(f"{name:8}{r['macro_f1']:>10.4f}{r['accuracy']:>10.4f}{r['seconds'] / 60:>10.1f}")
    if len(summary) == 2:
        print(
            f"time ratio ours/plain: {summary['ours']['seconds'] / summary['plain']['seconds']:.2f}"
        )
    with (args.out / "per_class_f1.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run", *classes])
        for name, r in summary.items():
            w.writerow([name, *[f"{r['per_class_f1'][c]:.3f}" for c in classes]])


if __name__ == "__main__":
    main()
