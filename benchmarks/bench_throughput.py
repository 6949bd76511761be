"""Training and inference images/s: transferlab vs a minimal hand-written timm + PyTorch loop.

Issue 10: "our conveniences cost nothing". Side by side in one process, with the same
model, batch size, image size, precision, device and memory format (channels-last), on
the same photos decoded once into memory as uint8; each side pays its own augmentation
and normalisation per batch.

- **ours**: the normal pipeline (``pipeline.train_run``, strategy ``full``, the default
  ``light`` augmentation) with a callback that times the optimizer steps after a few
  warm-up steps and then stops the run; inference is ``engine.predict_logits`` (what
  validation and ``evaluate`` run) over the in-memory images.
- **plain**: the shortest honest loop: a uint8 tensor of the same photos, one random
  resized crop + flip per *batch* (torchvision v2 applies one draw to a whole batch, the
  cheapest augmentation there is, so the ratio errs against us), normalise, AdamW step.
- **synthetic**: timm's ``benchmark.py`` logic: random input tensors already on the
  device, same model and batch, SGD (timm's default there) for training. ``real/synth``
  is the fraction of that speed the real images reach (issue 10 target >= 0.8 on a GPU).

Steps are timed between synchronisation points (``torch.cuda.synchronize`` on a GPU);
warm-up steps are not counted. With ``--scaling N``: one epoch of ``transferlab train
--devices 1`` vs ``--devices N`` (the first model and size), seconds per epoch from
``history.csv``, and how far the two runs' metrics and predictions differ.

    .venv/bin/python benchmarks/bench_throughput.py --data ../shared/datasets/ahe64/train \
        --image-sizes 128,224 --out runs/bench-throughput.json
    # on a GPU:
    .venv/bin/python benchmarks/bench_throughput.py --data ../shared/datasets/ahe64/train \
        --device cuda --precision bf16 --models tf_efficientnet_lite0,resnet50 \
        --image-sizes 224 --batch-size 128 --steps 50 --out runs/bench-throughput-gpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from transferlab.config import RunConfig, from_dict
from transferlab.data.discover import Sample, discover
from transferlab.data.split import SplitSamples, write_split_csv
from transferlab.engine import Callback, StopTraining, predict_logits
from transferlab.models.registry import create_model, resolve_preprocessing
from transferlab.pipeline import train_run
from transferlab.setup import RunSetup, setup_run

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """What both sides share: the comparison is only fair if every field is the same."""

    model: str
    size: int
    batch: int
    device: torch.device
    precision: str  # fp32 | bf16
    warmup: int  # steps not timed
    steps: int  # steps timed


def sync(device: torch.device) -> None:
    """Wait for the device, so a clock read covers the work queued before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(s: Settings) -> contextlib.AbstractContextManager[Any]:
    if s.precision == "bf16":
        return torch.autocast(s.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------ the photos


def pick_photos(data: Path, n_train: int, n_val: int, seed: int) -> SplitSamples:
    """``n_train`` training and ``n_val`` val photos, spread evenly over the classes."""
    found = discover(data)
    by_class: dict[str, list[Sample]] = {}
    for s in found.samples:
        by_class.setdefault(s.label, []).append(s)
    rng = random.Random(seed)
    pools = [rng.sample(v, len(v)) for _, v in sorted(by_class.items())]
    # Round-robin over the classes: every class gets its share of both parts.
    order = [pool[i] for i in range(max(map(len, pools))) for pool in pools if i < len(pool)]
    n_val = max(n_val, len(pools))  # every class in val
    return SplitSamples(order[n_val : n_val + n_train], order[:n_val], [])


def decode_uint8(samples: list[Sample], base: int) -> torch.Tensor:
    """The plain loop's own in-memory store: every photo resized to ``base`` px, uint8."""
    out = torch.empty(len(samples), 3, base, base, dtype=torch.uint8)
    for i, s in enumerate(samples):
        img = Image.open(s.path).convert("RGB").resize((base, base), Image.Resampling.BICUBIC)
        out[i] = torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy())
    return out


# ------------------------------------------------------------------ ours


class StepTimer(Callback):
    """Times the optimizer steps after ``warmup`` of them; stops the run after ``steps``."""

    def __init__(self, s: Settings) -> None:
        self.s, self.count, self.t0, self.seconds = s, 0, 0.0, 0.0

    def on_batch_end(self, loss: float) -> None:
        self.count += 1
        if self.count == self.s.warmup:
            sync(self.s.device)
            self.t0 = time.perf_counter()
        elif self.count == self.s.warmup + self.s.steps:
            sync(self.s.device)
            self.seconds = time.perf_counter() - self.t0
            raise StopTraining


def ours_config(s: Settings, data: Path, split_csv: Path) -> RunConfig:
    return from_dict(
        {},
        {
            "data.path": str(data),
            "data.split_file": str(split_csv),
            "model.name": s.model,
            "model.weights": "none",  # speed does not depend on the values of the weights
            "model.image_size": s.size,
            "train.strategy": "full",
            "train.epochs": 1,
            "train.batch_size": s.batch,
            "train.precision": s.precision,
            "train.device": str(s.device),
            "train.channels_last": True,
        },
    )


def ours_train(s: Settings, cfg: RunConfig, out: Path) -> float:
    timer = StepTimer(s)
    train_run(cfg, out, callbacks=[timer], write_report=False)
    if not timer.seconds:
        raise SystemExit(f"ours ran fewer than {s.warmup + s.steps} steps; use more --images")
    return s.batch * s.steps / timer.seconds


def ours_infer(s: Settings, setup: RunSetup) -> float:
    model, images = setup.model.to(s.device), setup.sets["train"]
    model.to(memory_format=torch.channels_last)
    args = (setup.prep, s.batch, s.device, s.precision)
    predict_logits(model, images.subset(range(s.batch * s.warmup)), *args)  # warm-up
    sync(s.device)
    t0 = time.perf_counter()
    predict_logits(model, images, *args)
    sync(s.device)
    return len(images) / (time.perf_counter() - t0)


# ------------------------------------------------------------------ plain


class Plain:
    """The minimal loop, written the way a timm user would write it by hand."""

    def __init__(self, s: Settings, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.s, self.images, self.labels = s, images, labels
        self.model, _ = create_model(s.model, int(labels.max()) + 1, "none")
        self.model.to(s.device).to(memory_format=torch.channels_last)
        cfg = timm.data.resolve_model_data_config(self.model)
        self.mean = torch.tensor(cfg["mean"], device=s.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(cfg["std"], device=s.device).view(1, 3, 1, 1) * 255
        self.augment = v2.Compose(
            [v2.RandomResizedCrop(s.size, scale=(0.35, 1.0)), v2.RandomHorizontalFlip()]
        )

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)

    def _batches(self, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.images))
        for i in range(n):
            idx = order[(i * self.s.batch) % len(order) :][: self.s.batch]
            x = self.images[idx].to(self.s.device, non_blocking=True)
            yield x, self.labels[idx].to(self.s.device, non_blocking=True)

    def train(self) -> float:
        s, model = self.s, self.model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.02)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
        model.train()
        t0 = 0.0
        for i, (x, y) in enumerate(self._batches(s.warmup + s.steps)):
            if i == s.warmup:
                sync(s.device)
                t0 = time.perf_counter()
            with autocast(s):
                loss = loss_fn(model(self._normalise(self.augment(x))).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(s.device)
        return s.batch * s.steps / (time.perf_counter() - t0)

    def infer(self) -> float:
        s, model = self.s, self.model
        model.eval()
        base, size = self.images.shape[-1], s.size
        top = (base - size) // 2

        def run(images: torch.Tensor) -> None:
            with torch.inference_mode(), autocast(s):
                for start in range(0, len(images), s.batch):
                    x = images[start : start + s.batch].to(s.device, non_blocking=True)
                    model(self._normalise(x[..., top : top + size, top : top + size]))

        run(self.images[: s.batch * s.warmup])
        sync(s.device)
        t0 = time.perf_counter()
        run(self.images)
        sync(s.device)
        return len(self.images) / (time.perf_counter() - t0)


# ------------------------------------------------------------------ synthetic (timm)


def synthetic(s: Settings, num_classes: int) -> tuple[float, float]:
    """timm ``benchmark.py``'s measurement: random tensors on the device, no data at all.
    Written out rather than imported: timm ships benchmark.py as a script, not a module."""
    model, _ = create_model(s.model, num_classes, "none")
    model.to(s.device).to(memory_format=torch.channels_last)
    x = torch.randn(s.batch, 3, s.size, s.size, device=s.device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (s.batch,), device=s.device)
    opt = timm.optim.create_optimizer_v2(model, opt="sgd", lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def train_step() -> None:
        with autocast(s):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer_step() -> None:
        with torch.inference_mode(), autocast(s):
            model(x)

    model.train()
    train = timed_steps(s, train_step)
    model.eval()
    return train, timed_steps(s, infer_step)


def timed_steps(s: Settings, step: Callable[[], None]) -> float:
    for _ in range(s.warmup):
        step()
    sync(s.device)
    t0 = time.perf_counter()
    for _ in range(s.steps):
        step()
    sync(s.device)
    return s.batch * s.steps / (time.perf_counter() - t0)


# ------------------------------------------------------------------ one setting


def measure(
    s: Settings, data: Path, split: SplitSamples, work: Path, repeats: int
) -> dict[str, Any]:
    """Every number of one model/size, in ``repeats`` interleaved rounds (ours, plain,
    synthetic one after the other, so a busy machine slows all of them alike); the best
    round of each counts, as ``timeit`` does: slowdowns come from outside, never speedups."""
    tag = f"{s.model}-{s.size}"
    split_csv = work / f"split-{tag}.csv"
    write_split_csv(split, split_csv, data.resolve())
    cfg = ours_config(s, data, split_csv)
    setup = setup_run(cfg)
    classes = split.classes
    labels = torch.tensor([classes.index(x.label) for x in split.train])
    base = resolve_preprocessing(s.model, s.size).base_size
    plain = Plain(s, decode_uint8(split.train, base), labels)
    rounds: dict[str, list[float]] = {}
    for r in range(repeats):
        logger.info("%s: round %d of %d", tag, r + 1, repeats)
        got = {
            "train_ours": ours_train(s, cfg, work / f"run-{tag}-{r}"),
            "train_plain": plain.train(),
            "infer_ours": ours_infer(s, setup),
            "infer_plain": plain.infer(),
        }
        got["train_synthetic"], got["infer_synthetic"] = synthetic(s, len(classes))
        for k, v in got.items():
            rounds.setdefault(k, []).append(round(v, 2))
    best = {k: max(v) for k, v in rounds.items()}
    return {
        "model": s.model,
        "image_size": s.size,
        "train": {k: best[f"train_{k}"] for k in ("ours", "plain", "synthetic")},
        "infer": {k: best[f"infer_{k}"] for k in ("ours", "plain", "synthetic")},
        "rounds": rounds,
    }


# ------------------------------------------------------------------ 1 -> N processes


def scaling(
    s: Settings, data: Path, split_csv: Path, n: int, work: Path, repeats: int
) -> dict[str, Any]:
    """One full epoch with ``transferlab train --devices 1`` and ``--devices n`` (the same
    global batch: ``--batch-size`` is split over the processes), in ``repeats`` interleaved
    rounds (the fastest epoch of each counts): seconds per epoch from ``history.csv``, and
    how far the two runs' metrics and predictions differ (first round). From the ImageNet
    weights, so that one epoch gives a model whose predictions mean something. Not
    bit-identical by design: each process draws its own augmentation, and the gradient
    all-reduce sums in another order."""
    runs: dict[str, Any] = {}
    for r in range(repeats):
        for devices in (1, n):
            got = one_epoch(s, data, split_csv, devices, work / f"scale-{devices}-{r}")
            runs.setdefault(str(devices), []).append(got)
    best = {k: min(v, key=lambda g: float(g["epoch_seconds"])) for k, v in runs.items()}
    one, many = runs["1"][0], runs[str(n)][0]
    return {
        "rounds": runs,
        "epoch_seconds": {k: v["epoch_seconds"] for k, v in best.items()},
        "speedup": best["1"]["epoch_seconds"] / best[str(n)]["epoch_seconds"],
        "delta_accuracy": abs(one["accuracy"] - many["accuracy"]),
        "delta_macro_f1": abs(one["macro_f1"] - many["macro_f1"]),
        "same_prediction": same_predictions(work / "scale-1-0", work / f"scale-{n}-0"),
    }


def one_epoch(s: Settings, data: Path, split_csv: Path, devices: int, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "transferlab", "train", str(data), "--out", str(out),
        "--split-file", str(split_csv), "--model", s.model, "--image-size", str(s.size),
        "--strategy", "full", "--epochs", "1", "--batch-size", str(s.batch),
        "--devices", str(devices), "--precision", s.precision,
        "--set", f"train.device={'cpu' if s.device.type == 'cpu' else 'auto'}",
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    with (out / "history.csv").open(newline="", encoding="utf-8") as fh:
        seconds = float(next(csv.DictReader(fh))["seconds"])
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "epoch_seconds": seconds,
        "wall_seconds": wall,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "evaluated_images": metrics["num_images"],
    }


def same_predictions(a: Path, b: Path) -> float:
    """Share of images the two runs' ``predictions.csv`` give the same class."""

    def read(run: Path) -> dict[str, str]:
        with (run / "predictions.csv").open(newline="", encoding="utf-8") as fh:
            return {r["path"]: r["predicted"] for r in csv.DictReader(fh)}

    pa, pb = read(a), read(b)
    if set(pa) != set(pb):
        raise SystemExit(f"{a} and {b} evaluated different images")
    return sum(pa[k] == pb[k] for k in pa) / max(1, len(pa))


# ------------------------------------------------------------------ main


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'model':24}{'px':>5}  {'':6}{'ours':>9}{'plain':>9}{'ratio':>7}"
        f"{'synth':>9}{'real/synth':>11}"
    )
    for r in rows:
        for kind in ("train", "infer"):
            v = r[kind]
            print(
                f"{r['model']:24}{r['image_size']:>5}  {kind:6}{v['ours']:>9.1f}{v['plain']:>9.1f}"
                f"{v['ours'] / v['plain']:>7.2f}{v['synthetic']:>9.1f}"
                f"{v['ours'] / v['synthetic']:>11.2f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/ahe64/train"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench-throughput.json"))
    ap.add_argument("--models", default="tf_efficientnet_lite0", help="comma-separated")
    ap.add_argument("--image-sizes", default="128,224", help="comma-separated")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--warmup", type=int, default=3, help="steps not timed")
    ap.add_argument("--steps", type=int, default=20, help="steps timed")
    ap.add_argument("--images", type=int, default=0, help="training photos (0: enough)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--scaling", type=int, default=0, help="N: also 1 vs N processes")
    ap.add_argument("--only", choices=["scaling"], default=None, help="skip the images/s")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; best counts")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    n_train = args.images or args.batch_size * (args.warmup + args.steps + 1)
    split = pick_photos(args.data, n_train, 20, args.seed)
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        work = Path(tmp)
        for model in args.models.split(",") if args.only != "scaling" else []:
            for size in (int(v) for v in args.image_sizes.split(",")):
                s = Settings(
                    model, size, args.batch_size, device, args.precision, args.warmup, args.steps
                )
                rows.append(measure(s, args.data, split, work, args.repeats))
        scale = None
        if args.scaling:
            split_csv = work / "split-scaling.csv"
            write_split_csv(split, split_csv, args.data.resolve())
            model, size = args.models.split(",")[0], int(args.image_sizes.split(",")[0])
            first = Settings(
                model, size, args.batch_size, device, args.precision, args.warmup, args.steps
            )
            scale = scaling(first, args.data, split_csv, args.scaling, work, args.repeats)
    print_table(rows)
    if scale:
        print(
            f"1 -> {args.scaling} processes: {scale['epoch_seconds']['1']:.1f} s -> "
            f"{scale['epoch_seconds'][str(args.scaling)]:.1f} s per epoch "
            f"({scale['speedup']:.2f}x); |d macro-F1| {scale['delta_macro_f1']:.4f}, "
            f"same prediction for {scale['same_prediction']:.1%} of the images"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    settings = vars(args) | {"data": str(args.data), "out": str(args.out)}
    payload = {"settings": settings, "machine": machine, "rows": rows, "scaling": scale}
    args.out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
