"""How many processes a run trains with, and starting them on this machine.

``--devices N`` outside a launcher starts N - 1 worker processes next to this one (which
becomes rank 0, keeping its progress bars and callbacks): ``torch.multiprocessing``'s
spawn with the environment a launcher would set (``MASTER_ADDR``/``MASTER_PORT``,
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), so that Accelerate joins them the same way as
under ``accelerate launch`` or ``torchrun``, where every process runs the command and
this module only checks that ``--devices`` agrees with ``WORLD_SIZE``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.multiprocessing.spawn import ProcessContext, start_processes

from transferlab.config import TrainConfig
from transferlab.errors import ConfigError, TransferlabError
from transferlab.runtime import check_precision, launcher_world_size

logger = logging.getLogger(__name__)

# How long rank 0 waits for its workers to exit once its own part is done.
JOIN_TIMEOUT_S = 60.0


class WorkerFailed(TransferlabError):
    """A training process of a run stopped; the others were stopped too."""


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only one)."""
    return os.environ.get("RANK", "0") == "0"


def _available(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.device_count(), "GPUs"
    return os.cpu_count() or 1, "CPU cores"


def world_size(cfg: TrainConfig, device: torch.device) -> int:
    """The number of processes the run trains with; a one-line ConfigError when
    ``--devices``, ``--precision`` and the machine or the launcher disagree."""
    check_precision(cfg, device)
    launched = launcher_world_size()
    if launched is not None:
        if cfg.devices not in ("auto", str(launched)):
            raise ConfigError(
                f"the launcher started {launched} process(es) (WORLD_SIZE={launched}) but "
                f"--devices is {cfg.devices}; pass --devices {launched} or --devices auto"
            )
        return _check(cfg, launched, device)
    available, what = _available(device)
    if available == 0:
        raise ConfigError(f"--device {device} but this machine has no GPU; use --device auto")
    if cfg.devices == "auto":
        return _check(cfg, available if device.type == "cuda" else 1, device)
    n = int(cfg.devices)
    if n > available:
        raise ConfigError(
            f"--devices {n} asks for more {what} than this machine has ({available}); "
            f"use --devices {available} or fewer"
        )
    if n > 1 and device.type == "cuda" and device.index is not None:
        raise ConfigError(
            f"--device {device} picks one GPU; with --devices {n} use --device cuda (or auto)"
        )
    return _check(cfg, n, device)


def _check(cfg: TrainConfig, n: int, device: torch.device) -> int:
    if cfg.sync_bn and n > 1 and device.type != "cuda":
        raise ConfigError(
            "--sync-bn needs GPUs: PyTorch's SyncBatchNorm does not run on CPU processes; "
            "drop --sync-bn (each process then normalises over its own share of the batch)"
        )
    if cfg.time_budget is not None and n > 1:
        raise ConfigError(
            "--time-budget plans the run from one process's measured speed; with "
            f"--devices {n} leave it out (or train on one process)"
        )
    if cfg.batch_size % n:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is the batch of all {n} processes together and "
            f"must split evenly over them; use a multiple of {n}"
        )
    return n


def spawns(world: int) -> bool:
    """Whether this process must start the run's other processes itself."""
    return world > 1 and launcher_world_size() is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int, env: dict[str, str], target: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    """One worker process: the launcher's environment for ``rank``, then ``target``. An
    error is one line on stderr and exit code 2 (1 for a crash), never a traceback."""
    os.environ.update({**env, "RANK": str(rank), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    # rank 0 reports; the others' info and warnings would repeat it
    logging.getLogger("transferlab").setLevel(logging.ERROR)
    try:
        target(*args)
    except TransferlabError as exc:
        print(f"error (process {rank}): {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:
        print(f"error (process {rank}): {exc.__class__.__name__}: {exc}", file=sys.stderr)
        sys.exit(1)


def _stop(ctx: ProcessContext) -> None:
    for p in ctx.processes:
        if p.is_alive():
            p.terminate()
    for p in ctx.processes:
        p.join(5)
        if p.is_alive():
            p.kill()


def _failed(ctx: ProcessContext, wait_s: float) -> list[str]:
    """The workers that stopped with an error (waiting up to ``wait_s`` for them)."""
    for p in ctx.processes:
        p.join(wait_s)
    return [
        f"process {rank} (exit code {p.exitcode})"
        for rank, p in enumerate(ctx.processes, start=1)
        if p.exitcode not in (None, 0)
    ]


def _reset_distributed() -> None:
    """Forget the process group and Accelerate's process-wide state (a later run in this
    process starts afresh)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)


@contextlib.contextmanager
def workers(
    n: int, target: Callable[..., Any], args: tuple[Any, ...], resume_hint: str
) -> Iterator[None]:
    """Ranks 1..n-1 run ``target(*args)`` in spawned processes while the body runs here
    as rank 0. A process that fails stops the others (theirs collective fails at once on
    gloo, or after the runtime's timeout); the error names it and ``resume_hint``."""
    # The cores shared out: N processes of all cores each would fight over them (and
    # Accelerate would set 1 thread each, with a warning, where OMP_NUM_THREADS is unset).
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // n))
    env = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(n),
        "LOCAL_WORLD_SIZE": str(n),
        "OMP_NUM_THREADS": threads,
    }
    saved = {k: os.environ.get(k) for k in [*env, "RANK", "LOCAL_RANK"]}
    saved_threads = torch.get_num_threads()
    os.environ.update({**env, "RANK": "0", "LOCAL_RANK": "0"})
    torch.set_num_threads(int(threads))
    ctx = _start(n, env, target, args)
    try:
        yield
        failed = _failed(ctx, JOIN_TIMEOUT_S)
        if failed:
            raise WorkerFailed(f"training {', '.join(failed)} stopped; {resume_hint}")
    except TransferlabError:
        _stop(ctx)
        raise
    except Exception as exc:
        failed = _failed(ctx, 5.0)
        _stop(ctx)
        if not failed:
            raise
        raise WorkerFailed(
            f"training {', '.join(failed)} stopped, so the run stopped too; {resume_hint}"
        ) from exc
    finally:
        _stop(ctx)
        _reset_distributed()
        torch.set_num_threads(saved_threads)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _start(
    n: int, env: dict[str, str], target: Callable[..., Any], args: tuple[Any, ...]
) -> ProcessContext:
    ctx = start_processes(
        _rank_of_worker,
        args=(env, target, args),
        nprocs=n - 1,
        join=False,
        start_method="spawn",
    )
    logger.info("started %d worker process(es) on this machine", n - 1)
    return ctx


def _rank_of_worker(
    index: int, env: dict[str, str], target: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    """``start_processes`` numbers its processes from 0; rank 0 is this process."""
    _worker(index + 1, env, target, args)
