"""Jobs in parallel processes, one fresh process per job, each in a slot: a GPU of its
own, or an equal share of the CPU cores (``compare --parallel N``).

Why a fresh ``spawn`` process per job rather than a :class:`ProcessPoolExecutor`: a job
killed from outside (the kernel's out-of-memory killer, a segfault in a native library)
breaks an executor's whole pool and with it every queued job, where here it fails that
job alone; a fresh process also hands all of a run's memory back when the run ends, and
sets its GPU and thread count before anything touches them. The start-up (importing
torch, about a second or two) is small next to a training run.

This module knows nothing of what a job does: the job is named as ``"module:function"``
and called as ``function(payload, send)`` in the worker, where ``send(message)`` passes a
picklable message to the parent while the job runs; its return value (picklable too) is
the job's result.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from transferlab.errors import ConfigError

logger = logging.getLogger(__name__)

SPAWN = multiprocessing.get_context("spawn")
STOP_SECONDS = 10.0  # how long stopped workers get to exit before they are killed


@dataclass(frozen=True)
class Slot:
    """Where a worker runs: ``gpu`` is its ``CUDA_VISIBLE_DEVICES`` (None on CPU)."""

    index: int
    threads: int
    gpu: str | None = None


def cpu_count() -> int:
    """The cores this process may use (its affinity, where the system says)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPUs a worker may be given, as ``CUDA_VISIBLE_DEVICES`` entries."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [g.strip() for g in given.split(",") if g.strip()] if given else []
    return names[:count] if names else [str(i) for i in range(count)]


def plan_slots(n: int, gpu: bool, option: str = "--parallel") -> list[Slot]:
    """``n`` slots: one GPU each, or ``cores // n`` threads each on CPU; more workers
    than GPUs (or cores) is refused, since they would only queue for the same device."""
    cores = cpu_count()
    if n < 1:
        raise ConfigError(f"{option} {n} is out of range; it must be >= 1 (1 = one run at a time)")
    if gpu:
        gpus = visible_gpus()
        if n > len(gpus):
            raise ConfigError(
                f"{option} {n} asks for more runs at once than the {len(gpus)} GPU(s) here "
                f"(one run per GPU); use {option} {max(len(gpus), 1)} or fewer"
            )
        return [Slot(i, max(cores // n, 1), gpus[i]) for i in range(n)]
    if n > cores:
        raise ConfigError(
            f"{option} {n} asks for more runs at once than the {cores} CPU core(s) here "
            f"(one run per core at least); use {option} {cores} or fewer"
        )
    return [Slot(i, cores // n) for i in range(n)]


@dataclass(frozen=True)
class Event:
    """What a worker said: ``kind`` is "message" (sent while running), "result" (its
    return value), or "died" (it ended without a result; ``value`` is its exit code)."""

    key: str
    kind: str
    value: Any


def _prefix_formatter(key: str) -> logging.Formatter:
    class Prefixed(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            msg = super().format(record)
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            return f"{level}[{key}] {msg}"

    return Prefixed("%(message)s")


@contextlib.contextmanager
def _environment(slot: Slot) -> Iterator[None]:
    """The slot's GPU and thread count in the environment a spawned worker starts with:
    in place before its first import (unpickling the job imports torch, and a library may
    query CUDA on import), unlike anything the worker could set itself."""
    values = {"OMP_NUM_THREADS": str(slot.threads)}
    if slot.gpu is not None:
        values["CUDA_VISIBLE_DEVICES"] = slot.gpu
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _worker(target: str, key: str, slot: Slot, payload: Any, conn: Connection, level: int) -> None:
    """The worker process: set its threads, log with the job's name in front, run the
    job, send its result."""
    import torch

    torch.set_num_threads(slot.threads)
    handler = logging.StreamHandler()
    handler.setFormatter(_prefix_formatter(key))
    root = logging.getLogger("transferlab")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    module, _, name = target.partition(":")
    job: Callable[[Any, Callable[[Any], None]], Any] = getattr(
        importlib.import_module(module), name
    )
    try:
        conn.send(("result", job(payload, lambda message: conn.send(("message", message)))))
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the terminal: end quietly
        raise SystemExit(130) from None
    finally:
        conn.close()


@dataclass
class _Running:
    process: BaseProcess
    conn: Connection
    slot: Slot
    result: bool = False  # a result arrived


class Workers:
    """Up to one running job per slot. Use as a context manager: leaving it (normally, on
    an exception, or on SIGTERM to this process) stops every worker still running."""

    def __init__(self, slots: list[Slot], target: str) -> None:
        self.slots = slots
        self.target = target
        self.running: dict[str, _Running] = {}
        self._old_term: Any = None

    def __enter__(self) -> Workers:
        if threading.current_thread() is threading.main_thread():
            self._old_term = signal.signal(signal.SIGTERM, self._on_term)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        """Stop the workers too (a killed parent would leave them training), then die of
        the same signal, as without this handler."""
        self.stop()
        signal.signal(signal.SIGTERM, self._old_term or signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    @property
    def free(self) -> int:
        return len(self.slots) - len(self.running)

    def start(self, key: str, payload: Any) -> None:
        busy = {r.slot.index for r in self.running.values()}
        slot = next(s for s in self.slots if s.index not in busy)
        parent, child = SPAWN.Pipe(duplex=False)
        level = logging.getLogger("transferlab").getEffectiveLevel()
        process = SPAWN.Process(
            target=_worker,
            args=(self.target, key, slot, payload, child, level),
            name=f"transferlab-{key}",
            daemon=False,  # a run may start processes of its own (decoding); stop() ends it
        )
        with _environment(slot):
            process.start()
        child.close()  # the worker holds the other end; EOF here means it ended
        self.running[key] = _Running(process, parent, slot)

    def wait(self, timeout: float | None = None) -> list[Event]:
        """What the running workers said or did; waits until at least one thing happened."""
        ready = wait([r.conn for r in self.running.values()], timeout)
        events = []
        for key, run in list(self.running.items()):
            if run.conn not in ready:
                continue
            events += self._read(key, run)
        return events

    def _read(self, key: str, run: _Running) -> list[Event]:
        events = []
        try:
            while True:
                kind, value = run.conn.recv()
                events.append(Event(key, kind, value))
                run.result = run.result or kind == "result"
                if kind == "result" or not run.conn.poll():
                    break
        except (EOFError, OSError):  # the worker ended: collect it
            run.process.join()
            del self.running[key]
            run.conn.close()
            if not run.result:
                events.append(Event(key, "died", run.process.exitcode))
            return events
        if run.result:
            run.process.join(STOP_SECONDS)
            del self.running[key]
            run.conn.close()
        return events

    def stop(self, keys: list[str] | None = None) -> None:
        """Terminate the given workers (all when None) and wait for them to exit."""
        chosen = list(self.running) if keys is None else keys
        for key in chosen:
            if key in self.running and self.running[key].process.is_alive():
                self.running[key].process.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        for key in chosen:
            run = self.running.pop(key, None)
            if run is None:
                continue
            run.process.join(max(deadline - time.monotonic(), 0.1))
            if run.process.is_alive():
                run.process.kill()
                run.process.join()
            run.conn.close()
