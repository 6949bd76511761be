"""Time-to-accuracy (issue 12): transferlab ``--time-budget`` vs a plain timm + PyTorch loop
given the same wall-clock budgets, scored once on a test part of their own.

One stratified split of ``--data`` (seed 0) into train, val and test; both sides train on
train, choose on val and are scored on test once, at the end, with the same function
(``transferlab.metrics.classification_report``: accuracy, macro-F1 with its stratified
bootstrap 95% interval, per-class F1). Per-class F1 is set against the paper's table
(``examples/baselines/``) with classes beaten, counted as transferlab's reports count them.

- **ours**: ``transferlab train DATA --split-file split.csv --time-budget B`` in a
  subprocess; its wall time is the subprocess's, start to exit (imports, decoding, the
  report and the bundle included).
- **plain**: the way timm's docs train: an ImageFolder-style dataset decoded by a
  DataLoader each epoch with ``timm.data.create_transform`` (its standard training
  augmentation), pretrained ``tf_efficientnet_lite0`` (the same packaged ImageNet
  weights), every layer trained from the start with AdamW, label smoothing 0.1, a short
  linear warm-up then cosine, the best val epoch kept. Its epoch count is found honestly
  inside the budget: a probe of a few training steps and val batches (on a copy of the
  model, so the weights start untouched) times one epoch, then it trains the most epochs
  whose predicted time, with each epoch's validation and the final test pass, fits what
  is left of the budget (when not even one epoch fits: the steps of a partial one that
  do). The probe, the model's creation and the loaders are all inside the budget's clock.

    .venv/bin/python benchmarks/bench_budget.py --data ../shared/datasets/ahe64/train \
        --budgets 5m,10m,15m --out runs/bench-budget/results.json
    # halves at different times (results merge into the same --out):
    .venv/bin/python benchmarks/bench_budget.py --only plain --out runs/bench-budget/results.json
    .venv/bin/python benchmarks/bench_budget.py --only ours --out runs/bench-budget/results.json
    # another backbone inside the same budget (its rows as 'ours:NAME'):
    .venv/bin/python benchmarks/bench_budget.py --only ours --model tf_efficientnet_lite1 \
        --budgets 10m --out runs/bench-budget/results.json
    # a quick check at tiny budgets on a small subset:
    .venv/bin/python benchmarks/bench_budget.py --per-class 30 --budgets 40s \
        --out /tmp/bench-budget/results.json
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image
from timm.data import create_transform
from torch import nn
from torch.utils.data import DataLoader, Dataset

from transferlab.audit.core import hash_checks
from transferlab.budget import parse_duration
from transferlab.data.discover import Sample, discover
from transferlab.data.split import SplitSamples, stratified_split, write_split_csv
from transferlab.metrics import classification_report
from transferlab.models.registry import create_model, resolve_preprocessing
from transferlab.report.comparison import format_beaten, match_classes, wins_losses
from transferlab.report.leaderboard import load_baseline

logger = logging.getLogger(__name__)

MODEL = "tf_efficientnet_lite0"
PROBE_STEPS = 6  # training steps the plain loop's probe times (after one warm-up step)
PROBE_VAL_BATCHES = 3  # val batches it times (after one warm-up batch)


# ------------------------------------------------------------------ data


def make_split(data: Path, val: float, test: float, per_class: int, seed: int) -> SplitSamples:
    """The stratified train/val/test split both sides use, copies of a photo (exact or
    near, transferlab's hash checks) kept in one part so the test part holds no copy of a
    training photo; ``per_class`` > 0 first keeps that many photos of each class."""
    samples = discover(data).samples
    if per_class:
        rng = random.Random(seed)
        by_class: dict[str, list[Sample]] = {}
        for s in samples:
            by_class.setdefault(s.label, []).append(s)
        samples = [s for v in by_class.values() for s in rng.sample(v, min(per_class, len(v)))]
    groups = hash_checks(samples).path_groups()
    return stratified_split(samples, val, test, seed=seed, groups=groups)


class FileDataset(Dataset[tuple[torch.Tensor, int]]):
    """Photos decoded from disk on every pass, as an ImageFolder does."""

    def __init__(self, rows: list[tuple[Path, int]], transform: Callable[[Any], Any]) -> None:
        self.rows, self.transform = rows, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.rows[i]
        return self.transform(Image.open(path).convert("RGB")), label


# ------------------------------------------------------------------ the plain loop


@dataclass(frozen=True)
class PlainSettings:
    size: int
    batch: int
    workers: int
    lr: float
    seed: int


class PlainRun:
    """One plain run inside a budget: probe, plan the epochs, train, keep the best val
    epoch, score test once."""

    def __init__(self, split: SplitSamples, s: PlainSettings) -> None:
        self.s, self.classes = s, split.classes
        idx = {c: i for i, c in enumerate(self.classes)}
        rows = {k: [(x.path, idx[x.label]) for x in v] for k, v in split.items()}
        torch.manual_seed(s.seed)
        self.model, _ = create_model(MODEL, len(self.classes), "imagenet", drop_rate=0.2)
        prep = resolve_preprocessing(MODEL, s.size)
        common = {
            "input_size": (3, s.size, s.size),
            "mean": prep.mean,
            "std": prep.std,
            "interpolation": prep.interpolation,
            "crop_pct": prep.crop_pct,
        }
        train_tf = create_transform(**common, is_training=True)  # type: ignore[arg-type]
        eval_tf = create_transform(**common, is_training=False)  # type: ignore[arg-type]
        # Workers kept between epochs, as timm's own loader does (persistent_workers).
        keep = s.workers > 0
        self.train_dl = DataLoader(
            FileDataset(rows["train"], train_tf),
            s.batch,
            shuffle=True,
            num_workers=s.workers,
            persistent_workers=keep,
        )
        self.val_dl = self._eval_loader(rows["val"], eval_tf)
        self.test_dl = self._eval_loader(rows["test"], eval_tf)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    def _eval_loader(self, rows: list[tuple[Path, int]], tf: Callable[[Any], Any]) -> DataLoader:
        workers = self.s.workers
        return DataLoader(
            FileDataset(rows, tf),
            self.s.batch * 2,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def probe(self) -> tuple[float, float]:
        """Seconds per training step and per val batch, each after one warm-up, measured on
        a copy of the model with no optimizer step (the real weights stay as they were)."""
        model = copy.deepcopy(self.model).train()
        marks = []
        for i, (x, y) in enumerate(self.train_dl):
            self.loss_fn(model(x), y).backward()
            model.zero_grad(set_to_none=True)
            marks.append(time.perf_counter())
            if i == PROBE_STEPS:
                break
        step = (marks[-1] - marks[0]) / (len(marks) - 1)
        model.eval()
        marks = []
        with torch.inference_mode():
            for i, (x, _) in enumerate(self.val_dl):
                model(x)
                marks.append(time.perf_counter())
                if i == PROBE_VAL_BATCHES:
                    break
        batch = (marks[-1] - marks[0]) / max(1, len(marks) - 1)
        return step, batch

    def plan(self, left: float) -> tuple[int, dict[str, float]]:
        """Training steps for the most whole epochs whose predicted time (training, each
        epoch's validation and the final test pass) fits in ``left`` seconds; when not even
        one epoch fits, the steps of one partial epoch that do (at least one)."""
        step, val_batch = self.probe()
        val, test = val_batch * len(self.val_dl), val_batch * len(self.test_dl)
        per_epoch = len(self.train_dl)
        epochs = max(0, math.floor((left - test) / (step * per_epoch + val)))
        steps = epochs * per_epoch if epochs else max(1, math.floor((left - test - val) / step))
        return steps, {"step": step, "val": val, "epoch": step * per_epoch + val, "test": test}

    def train(self, steps: int) -> tuple[dict[str, torch.Tensor], list[float]]:
        """``steps`` steps (the last epoch may be partial) with AdamW, a linear warm-up over
        the first 3% of them then cosine; validated after each epoch. The weights of the
        best val macro-F1 epoch and each epoch's val macro-F1."""
        model = self.model
        opt = torch.optim.AdamW(model.parameters(), lr=self.s.lr, weight_decay=0.05)
        warm = max(1, round(0.03 * steps))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda t: (
                (t + 1) / warm
                if t < warm
                else 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, steps - warm)))
            ),
        )
        best, best_state, scores = -1.0, copy.deepcopy(model.state_dict()), []
        done = 0
        while done < steps:
            model.train()
            for x, y in itertools.islice(self.train_dl, steps - done):
                loss = self.loss_fn(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                done += 1
            scores.append(self.score(self.val_dl)["macro_f1"])
            logger.info("plain: %d/%d steps, val macro-F1 %.4f", done, steps, scores[-1])
            if scores[-1] > best:
                best, best_state = scores[-1], copy.deepcopy(model.state_dict())
        return best_state, scores

    def score(self, loader: DataLoader) -> dict[str, Any]:
        self.model.eval()
        preds, targets = [], []
        with torch.inference_mode():
            for x, y in loader:
                preds.append(self.model(x).argmax(1))
                targets.append(y)
        y_true, y_pred = torch.cat(targets).numpy(), torch.cat(preds).numpy()
        return classification_report(y_true, y_pred, self.classes)


def run_plain(split: SplitSamples, budget: float, s: PlainSettings) -> dict[str, Any]:
    start = time.perf_counter()
    run = PlainRun(split, s)
    steps, estimate = run.plan(budget - (time.perf_counter() - start))
    epochs = steps / len(run.train_dl)
    logger.info("plain: %.2f epoch(s) fit %.0f s (one ~%.0f s)", epochs, budget, estimate["epoch"])
    state, val_scores = run.train(steps)
    run.model.load_state_dict(state)
    report = run.score(run.test_dl)
    return {
        **summary(report),
        "seconds": time.perf_counter() - start,
        "epochs": round(epochs, 2),
        "best_epoch": val_scores.index(max(val_scores)) + 1,
        "val_macro_f1": val_scores,
        "estimate_seconds": estimate,
        "image_size": s.size,
    }


# ------------------------------------------------------------------ ours


def run_ours(
    data: Path,
    split_csv: Path,
    budget: str,
    out: Path,
    image_size: int | None,
    model: str | None = None,
) -> dict[str, Any]:
    """``transferlab train`` with ``--time-budget`` in its own process, timed start to exit
    (at ``image_size``, the plain loop's, unless None: the size the plan chooses; with
    ``model``, unless None: transferlab's default)."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [
        sys.executable, "-m", "transferlab", "train", str(data), "--out", str(out),
        "--split-file", str(split_csv), "--time-budget", budget,
        *(["--image-size", str(image_size)] if image_size else []),
        *(["--model", model] if model else []),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    sys.stderr.write(done.stderr)
    if done.returncode == 2:  # refused with one line, e.g. a budget too small to plan
        return {"refused": done.stderr.strip().splitlines()[-1], "seconds": seconds}
    done.check_returncode()
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    if metrics.get("split") != "test":
        raise SystemExit(f"{out}: scored on {metrics.get('split')}, not on the test part")
    training = metrics.get("training", {})
    config = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    return {
        **summary(metrics),
        "seconds": seconds,
        "epochs": training.get("epochs"),
        "best_epoch": training.get("best_epoch"),
        # the size trained at: the plan's (config.yaml keeps the size as asked)
        "image_size": (metrics.get("time_budget") or {}).get("plan", {}).get("image_size")
        or config.get("model", {}).get("image_size"),
        "resize_from": config.get("train", {}).get("resize_from"),
        "model": config.get("model", {}).get("name"),
        "time_budget": metrics.get("time_budget") or training.get("time_budget"),
        "run": str(out),
    }


# ------------------------------------------------------------------ results


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What the table shows of a ``classification_report`` (both sides go through it)."""
    return {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "macro_f1_ci95": report.get("ci95", {}).get("macro_f1"),
        "per_class_f1": {c: v["f1"] for c, v in report["per_class"].items()},
        "test_images": report["num_images"],
    }


def against_paper(result: dict[str, Any], baseline: Path) -> dict[str, Any]:
    """Classes beaten by the paper's per-class F1, counted as the comparison reports do."""
    paper = load_baseline(baseline)
    matched, _ = match_classes(paper.f1, list(result["per_class_f1"]))
    wins, losses = wins_losses(result["per_class_f1"], matched)
    return {
        "paper": paper.name,
        "wins": wins,
        "losses": losses,
        "beaten": format_beaten(wins - losses),
    }


def print_tables(results: dict[str, dict[str, Any]], baseline: Path) -> None:
    w = max([7] + [len(n) + 1 for sides in results.values() for n in sides])  # the run column
    print(
        f"{'budget':8}{'run':{w}}{'test acc':>10}{'macro-F1':>10}{'95% CI':>18}{'wall':>9}"
        f"{'epochs':>8}{'beaten':>8}"
    )
    for budget, sides in results.items():
        for name, r in sides.items():
            if "refused" in r:
                print(f"{budget:8}{name:{w}} refused after {r['seconds']:.0f} s: {r['refused']}")
                continue
            ci = r["macro_f1_ci95"]
            ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
            print(
                f"{budget:8}{name:{w}}{r['accuracy']:>10.4f}{r['macro_f1']:>10.4f}{ci_text:>18}"
                f"{r['seconds'] / 60:>8.1f}m{r['epochs']!s:>8}{r['paper']['beaten']:>8}"
            )
    paper = load_baseline(baseline)
    scored = [
        (b, n, r) for b, sides in results.items() for n, r in sides.items() if "refused" not in r
    ]
    if not scored:
        return
    classes = list(scored[0][2]["per_class_f1"])
    matched, _ = match_classes(paper.f1, classes)
    print("\nper-class F1: " + ", ".join(classes))
    label = max(16, *(len(f"{b} {n} ") for b, n, _ in scored))  # the row label's width
    print(f"{'paper':{label}}" + " ".join(f"{matched[c] or 0:.3f}" for c in classes))
    for budget, name, r in scored:
        print(
            f"{budget + ' ' + name:{label}}"
            + " ".join(f"{r['per_class_f1'][c]:.3f}" for c in classes)
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/ahe64/train"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench-budget/results.json"))
    ap.add_argument("--budgets", default="5m,10m,15m", help="comma-separated: 90s, 15m, 1h30m")
    ap.add_argument("--only", choices=["ours", "plain"], default=None)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--test-fraction", type=float, default=0.15)
    ap.add_argument("--per-class", type=int, default=0, help="keep N photos a class (0: all)")
    ap.add_argument("--plain-image-size", type=int, default=128)
    ap.add_argument("--plain-lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=32, help="plain loop")
    ap.add_argument("--workers", type=int, default=2, help="plain loop DataLoader workers")
    ap.add_argument(
        "--baseline", type=Path, default=Path("examples/baselines/ahe-paper-resnet.yaml")
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--same-size",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="ours at the plain loop's image size (default: the size ours plans itself)",
    )
    ap.add_argument(
        "--model",
        default=None,
        help="ours with this backbone (its results as 'ours:NAME'; default: transferlab's)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    budgets = {b.strip(): parse_duration(b.strip(), "--budgets") for b in args.budgets.split(",")}
    work = args.out.parent
    work.mkdir(parents=True, exist_ok=True)
    split = make_split(args.data, args.val_fraction, args.test_fraction, args.per_class, args.seed)
    split_csv = work / "split.csv"
    write_split_csv(split, split_csv, args.data.resolve())
    logger.info("split: %s", {k: len(v) for k, v in split.items()})
    # Results merge into an existing --out, so the two halves can run at different times.
    saved = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results: dict[str, dict[str, Any]] = saved.get("results", {})
    plain = PlainSettings(
        args.plain_image_size, args.batch_size, args.workers, args.plain_lr, args.seed
    )
    for text, seconds in budgets.items():
        sides = results.setdefault(text, {})
        if args.only in (None, "ours"):
            size = args.plain_image_size if args.same_size else None
            name = f"ours:{args.model}" if args.model else "ours"
            folder = work / f"{name.replace(':', '-')}-{text}"
            sides[name] = run_ours(args.data, split_csv, text, folder, size, args.model)
        if args.only in (None, "plain"):
            sides["plain"] = run_plain(split, seconds, plain)
        for r in sides.values():
            r.setdefault("ran_at", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
            # the machine is shared: its load over the last 15 minutes, beside the numbers
            r.setdefault("load_15min", round(os.getloadavg()[2], 1))
            if "refused" not in r:
                r["paper"] = against_paper(r, args.baseline)
        args.out.write_text(
            json.dumps(
                {
                    "args": vars(args)
                    | {k: str(getattr(args, k)) for k in ("data", "out", "baseline")},
                    "split": {k: len(v) for k, v in split.items()},
                    "results": results,
                },
                indent=2,
            )
        )
    print_tables(results, args.baseline)


if __name__ == "__main__":
    main()
