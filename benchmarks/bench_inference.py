"""Inference speed and accuracy: PyTorch eager vs ONNX Runtime (fp32) vs ONNX Runtime int8.

Images/s at batch 1 and 32 for the three engines, measured in interleaved rounds in one
process (so they share the machine's state) with the same number of threads; ratios to
eager come from the same run. Accuracy of all three on the same held-out images.

Without --model, a quick run is trained first: tf_efficientnet_lite0 at 224 px, head-only
on cached features, on --per-class images per class of --data (seconds, not minutes).

    .venv/bin/python benchmarks/bench_inference.py --data ../shared/datasets/ahe64/train \
        --threads 1 --out runs/bench-inference
    .venv/bin/python benchmarks/bench_inference.py --model runs/demo --out runs/bench-inf2
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime
import torch

from transferlab.backends import Backend, OnnxBackend, load_backend
from transferlab.config import from_dict
from transferlab.data.transforms import eval_batch
from transferlab.evaluate import load_eval_set, predict_set
from transferlab.export import ExportOptions, export_model
from transferlab.pipeline import train_run


def quick_run(data: Path, out: Path, per_class: int, seed: int) -> Path:
    """A head-only run on a class-balanced subset of ``data`` (copied into ``out``)."""
    subset = out / "data"
    rng = random.Random(seed)
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        (subset / folder.name).mkdir(parents=True, exist_ok=True)
        for f in rng.sample(files, min(per_class, len(files))):
            shutil.copy(f, subset / folder.name / f.name)
    cfg = from_dict(
        {},
        {
            "data.path": str(subset),
            "data.val_fraction": 0.2,
            "data.test_fraction": 0.3,
            "train.epochs": 0,
            "train.head_epochs": 15,
            "train.seed": seed,
        },
    )
    train_run(cfg, out / "run")
    return out / "run"


def throughput(run: Callable[[], object], batch: int, seconds: float) -> float:
    """Images/s of ``run`` (one batch per call) over at least ``seconds``."""
    run()  # warm-up: allocations, ORT's first-run optimisation
    done, started = 0, time.perf_counter()
    while True:
        run()
        done += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and done >= 3:
            return done * batch / elapsed


def speed(
    engines: dict[str, Backend], x: torch.Tensor, batches: list[int], rounds: int, seconds: float
) -> dict[str, dict[int, float]]:
    """Median images/s per engine and batch size over interleaved rounds."""
    samples: dict[str, dict[int, list[float]]] = {e: {b: [] for b in batches} for e in engines}
    for _ in range(rounds):
        for batch in batches:
            xb = x[:batch]
            for name, engine in engines.items():
                rate = throughput(functools.partial(engine.forward, xb), batch, seconds)
                samples[name][batch].append(rate)
    return {e: {b: statistics.median(v) for b, v in per.items()} for e, per in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="A run folder (default: train a quick one).")
    parser.add_argument("--data", type=Path, help="Class folders to train the quick run on.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="Per measurement.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.model is None and args.data is None:
        parser.error("give --model RUN or --data CLASS_FOLDERS")
    args.out.mkdir(parents=True, exist_ok=True)
    run = args.model or quick_run(args.data, args.out, args.per_class, args.seed)

    torch.set_num_threads(args.threads)
    fp32, int8 = args.out / "model.onnx", args.out / "model-int8.onnx"
    export_model(run, ExportOptions("onnx", fp32))
    quant = export_model(run, ExportOptions("onnx", int8, quantize="int8"))
    engines = {
        "torch eager": load_backend(run, "torch"),
        "onnxruntime": OnnxBackend(fp32, args.threads),
        "onnxruntime int8": OnnxBackend(int8, args.threads),
    }
    reference = engines["torch eager"]
    images, described, _ = load_eval_set(reference, run, None)
    accuracy = {
        name: float((predict_set(e, images).argmax(1) == images.targets).float().mean())
        for name, e in engines.items()
    }
    assert images.images is not None
    x = eval_batch(images.images[:32], reference.preprocessing)
    while len(x) < 32:
        x = torch.cat([x, x])[:32]
    rates = speed(engines, x, [1, 32], args.rounds, args.seconds)
    ratios = {
        e: {str(b): round(r / rates["torch eager"][b], 2) for b, r in per.items()}
        for e, per in rates.items()
    }
    result = {
        "model": str(run),
        "architecture": reference.architecture,
        "input_size": reference.preprocessing.input_size,
        "evaluated": f"{len(images)} images, {described}",
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "images_per_s": {
            e: {str(b): round(r, 1) for b, r in per.items()} for e, per in rates.items()
        },
        "ratio_to_eager": ratios,
        "accuracy": accuracy,
        "int8_accuracy_change_points": round(
            (accuracy["onnxruntime int8"] - accuracy["torch eager"]) * 100, 2
        ),
        "int8_calibration": quant.quantization["calibration"] if quant.quantization else None,
        "model_mb": {
            "safetensors": round((run / "model" / "model.safetensors").stat().st_size / 1e6, 1),
            "onnx": round(fp32.stat().st_size / 1e6, 1),
            "onnx int8": round(int8.stat().st_size / 1e6, 1),
        },
    }
    (args.out / "bench_inference.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print("\n| engine | batch 1 img/s | vs eager | batch 32 img/s | vs eager | accuracy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for e, per in rates.items():
        r = ratios[e]
        print(
            f"| {e} | {per[1]:.1f} | {r['1']:.2f}x | {per[32]:.1f} | {r['32']:.2f}x "
            f"| {accuracy[e]:.4f} |"
        )


if __name__ == "__main__":
    main()
