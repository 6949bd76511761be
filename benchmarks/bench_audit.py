"""``transferlab audit`` timings and findings on a real dataset (issue 11).

Times the cheap checks (one read of every file: content digest, perceptual hash, facts;
duplicate grouping) that ``train`` runs by default, then the feature checks twice with
a feature cache: the first run extracts the backbone's features, the second reads them
from the cache. Writes the findings as JSON and HTML next to the timings.

    .venv/bin/python benchmarks/bench_audit.py --data ../shared/datasets/ahe64/train \
        --image-size 96 --out runs/bench-audit
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from transferlab.audit.core import audit_data
from transferlab.audit.report import write_html, write_json


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/ahe64/train"))
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-audit"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "features"
    timings: dict[str, object] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    started = time.perf_counter()
    cheap = audit_data(args.data, model=None)
    timings["hash_checks_wall_s"] = round(time.perf_counter() - started, 2)
    print("hash checks:", cheap.summary(), f"{timings['hash_checks_wall_s']} s", flush=True)
    for attempt in ("first", "cached"):
        started = time.perf_counter()
        full = audit_data(args.data, image_size=args.image_size, cache_dir=cache)
        timings[f"feature_audit_{attempt}_wall_s"] = round(time.perf_counter() - started, 2)
        timings[f"feature_audit_{attempt}_parts_s"] = full.seconds
        print(attempt, full.summary(), full.seconds, flush=True)
    write_json(full, args.out / "audit.json")
    write_html(full, args.out / "audit.html")
    found = {"hash_only": cheap.summary(), "with_features": full.summary()}
    text = json.dumps({"timings": timings, "found": found}, indent=2)
    (args.out / "bench.json").write_text(text, "utf-8")
    print(text)


if __name__ == "__main__":
    main()
