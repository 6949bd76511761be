"""HTTP serving: p50/p99 latency and requests/s at 1 and 8 concurrent clients on loopback.

Starts ``transferlab serve`` as a real process on a free 127.0.0.1 port for each server
configuration and sends real photos as multipart uploads. Every load level is bounded by
--requests and --seconds, whichever comes first; nothing leaves the machine.

    .venv/bin/python benchmarks/bench_serve.py --model runs/bench-inference/run --threads 1 \
        --out runs/bench-serve
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle
from pathlib import Path
from threading import Lock

import httpx

from transferlab.predict import expand_inputs

REPO = Path(__file__).resolve().parents[1]
# (label, extra serve arguments)
CONFIGS = {
    "torch": ["--backend", "torch"],
    "onnx": ["--backend", "onnx"],
    "onnx, micro-batch 8": ["--backend", "onnx", "--max-batch", "8", "--batch-window-ms", "5"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(model: Path, extra: list[str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "transferlab", "serve", str(model), "--port", str(port), "-q",
             *extra],
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not start in 300 s")


def load(
    url: str, photos: list[bytes], clients: int, requests: int, seconds: float
) -> dict[str, object]:
    """``clients`` threads posting photos until ``requests`` are done or time is up."""
    latencies: list[float] = []
    errors = issued = 0
    lock = Lock()
    source = cycle(photos)
    deadline = time.monotonic() + seconds

    def client() -> None:
        nonlocal errors, issued
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < deadline:
                with lock:
                    if issued >= requests:
                        return
                    issued += 1
                    body = next(source)
                t0 = time.perf_counter()
                r = http.post(url + "/predict", files={"file": ("photo.jpg", body)})
                took = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        latencies.append(took)
                    else:
                        errors += 1

    # Warm-up, not counted.
    httpx.post(url + "/predict", files={"file": ("photo.jpg", photos[0])}, timeout=60)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    ms = sorted(t * 1000 for t in latencies)
    cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {
        "clients": clients,
        "requests": len(ms),
        "errors": errors,
        "seconds": round(wall, 2),
        "requests_per_s": round(len(ms) / wall, 2),
        "p50_ms": round(cuts[49], 1),
        "p99_ms": round(cuts[98], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="A run or bundle folder.")
    parser.add_argument("--images", type=Path, default=REPO / "examples" / "samples")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=200, help="At most, per load level.")
    parser.add_argument("--seconds", type=float, default=30.0, help="At most, per load level.")
    parser.add_argument("--config", action="append", choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, help="Inference threads of the server.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    photos = [p.read_bytes() for p in expand_inputs([args.images])]
    results: list[dict[str, object]] = []
    for name in args.config or list(CONFIGS):
        extra = CONFIGS[name] + (["--threads", str(args.threads)] if args.threads else [])
        proc, url = start(args.model, extra, args.out / f"server-{len(results)}.log")
        try:
            for clients in (1, 8):
                row = {"server": name, **load(url, photos, clients, args.requests, args.seconds)}
                print(json.dumps(row), flush=True)
                results.append(row)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    doc = {
        "model": str(args.model),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "results": results,
    }
    (args.out / "bench_serve.json").write_text(json.dumps(doc, indent=2))
    print("\n| server | clients | requests | req/s | p50 ms | p99 ms | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['server']} | {r['clients']} | {r['requests']} | {r['requests_per_s']} "
            f"| {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |"
        )


if __name__ == "__main__":
    main()
