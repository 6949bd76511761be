"""The cost of one training step per image against the image size (issue 12): what the
time-budget planner trades epochs against.

A timm model (random weights: the speed does not depend on them), channels-last, AdamW,
random input; for each size the median of ``--steps`` timed steps after one warm-up step,
at ``--batch-size`` and at a batch of 8 (what the budget probe once used on a CPU), fp32
and, with ``--bf16``, under CPU bf16 autocast. Prints one row per size and writes JSON.

    .venv/bin/python benchmarks/bench_step_size.py --sizes 64,80,96,112,128,160 \\
        --out runs/bench-step-size.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import timm
import torch


def step_time(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    size: int,
    batch: int,
    bf16: bool,
    steps: int,
) -> float:
    """Median seconds per image of a training step."""
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]) / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tf_efficientnet_lite0")
    ap.add_argument("--sizes", default="64,80,96,112,128,160")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--bf16", action="store_true", help="also time CPU bf16 autocast")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-step-size.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=10).to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        row = {
            "size": size,
            "per_image": step_time(model, opt, size, args.batch_size, False, args.steps),
            "per_image_batch8": step_time(model, opt, size, 8, False, args.steps),
        }
        if args.bf16:
            row["per_image_bf16"] = step_time(model, opt, size, args.batch_size, True, args.steps)
        rows.append(row)
        print(
            "  ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
            )
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
            "load_1min": round(os.getloadavg()[0], 1)}  # fmt: skip
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
