"""Where training runs: one device or many processes, behind one small seam.

Everything device- and process-specific in the training loop goes through a
:class:`Runtime`: putting the model on its device (and wrapping it for data parallelism),
autocast, backward with the precision's gradient scaler, the optimizer step, skipping the
gradient sync of accumulation steps, the shard of a dataset each process takes, gathering
results back, barriers and broadcasts, and "am I the main process".

:class:`Runtime` itself is one process on one device and costs nothing (no Accelerate
import). :class:`AccelerateRuntime` runs on Hugging Face Accelerate's ``Accelerator`` for
more than one process (gloo on CPU, nccl on GPUs) and for mixed precision on a GPU.
:func:`make_runtime` picks one from the config and the launcher's environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, TypeVar

import torch
from torch import nn

from transferlab.config import TrainConfig
from transferlab.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long a process waits for the others at a collective (a barrier, a gradient
# all-reduce) before it gives up: a rank that dies must not leave the others hanging.
# Rank 0 writes checkpoints between epochs while the others wait, hence minutes.
TIMEOUT_ENV = "TRANSFERLAB_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0

_ACCELERATE_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def launcher_world_size() -> int | None:
    """The process count a launcher (``torchrun``, ``accelerate launch``, or our own
    workers) set in the environment; None outside one."""
    size = os.environ.get("WORLD_SIZE")
    return int(size) if size else None


def timeout_seconds() -> float:
    return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))


class Runtime:
    """One process on one device: every collective is the identity."""

    rank = 0
    world_size = 1

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self, precision: str) -> contextlib.AbstractContextManager[Any]:
        if precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if precision == "fp16":
            return torch.autocast(self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    def prepare(self, model: nn.Module, compile_model: bool = False) -> nn.Module:
        """The module to train through: compiled if asked (``model`` itself stays
        uncompiled, so no ``_orig_mod.`` prefix reaches a checkpoint or the bundle)."""
        return torch.compile(model) if compile_model else model  # type: ignore[return-value]

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self, opt: torch.optim.Optimizer) -> None:
        opt.step()

    def no_sync(self, net: nn.Module) -> contextlib.AbstractContextManager[Any]:
        """Backward without the gradient all-reduce (all but the last accumulation step)."""
        return contextlib.nullcontext()

    def shard(self, n: int) -> torch.Tensor:
        """This process's positions of ``n`` items: every ``world_size``-th from ``rank``,
        padded with the first ones so every process gets as many (a DistributedSampler's
        rule; :meth:`gather_rows` drops the padding again)."""
        per = -(-n // self.world_size)
        padded = torch.arange(per * self.world_size) % max(1, n)
        return padded[self.rank :: self.world_size]

    def gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """The rows of every process's :meth:`shard` of ``n`` items, in the original order
        and each exactly once (the padding dropped)."""
        return local

    def broadcast(self, obj: T) -> T:
        """``obj`` as the main process has it."""
        return obj

    def broadcast_module(self, module: nn.Module) -> None:
        """Give every process the main process's parameters and buffers of ``module``."""

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any process (a stop asked for on one stops all)."""
        return flag

    def mean(self, value: float) -> float:
        """``value`` averaged over the processes (e.g. each one's mean training loss)."""
        return value

    def barrier(self) -> None: ...

    def close(self) -> None: ...


class AccelerateRuntime(Runtime):
    """Data parallel training on Hugging Face Accelerate: DDP over gloo (CPU) or nccl (GPU),
    its native mixed precision with a gradient scaler for fp16."""

    def __init__(self, cpu: bool, precision: str) -> None:
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs

        handler = InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_seconds()))
        self.acc = Accelerator(
            cpu=cpu,
            mixed_precision=_ACCELERATE_PRECISION[precision],
            kwargs_handlers=[handler],
        )
        self.precision = precision
        super().__init__(self.acc.device)
        self.rank = self.acc.process_index
        self.world_size = self.acc.num_processes

    def autocast(self, precision: str) -> contextlib.AbstractContextManager[Any]:
        if precision == "fp32" or self.precision == "fp32":
            return contextlib.nullcontext()
        return self.acc.autocast()

    def prepare(self, model: nn.Module, compile_model: bool = False) -> nn.Module:
        """Compile (before wrapping, so DDP sees the compiled graph's parameters as the
        model's), then Accelerate's ``prepare_model``: DDP over the parameters that train
        *now* — call again after the trainable set changes (DDP's reducer does not see a
        later ``requires_grad`` flip)."""
        # prepare_model patches autocast into the instance's forward; a second prepare of
        # the same module (the next phase) must start from the class's own forward.
        vars(model).pop("forward", None)
        vars(model).pop("_original_forward", None)
        net: nn.Module = torch.compile(model) if compile_model else model  # type: ignore[assignment]
        if not any(p.requires_grad for p in model.parameters()):
            return net.to(self.device)
        return self.acc.prepare_model(net)

    def backward(self, loss: torch.Tensor) -> None:
        self.acc.backward(loss)

    def step(self, opt: torch.optim.Optimizer) -> None:
        # The optimizer is not wrapped by Accelerate (engine's Schedule and checkpoints hold
        # the plain one); fp16's scaler is Accelerate's, applied here.
        scaler = self.acc.scaler
        if scaler is None:
            opt.step()
            return
        scaler.step(opt)
        scaler.update()

    def no_sync(self, net: nn.Module) -> contextlib.AbstractContextManager[Any]:
        if isinstance(net, nn.parallel.DistributedDataParallel):
            return net.no_sync()
        return contextlib.nullcontext()

    def gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        # Accelerate's gather_for_metrics drops padding only for a DataLoader it prepared;
        # our batches come from the in-memory store, so the strided shard is undone here.
        gathered = self.acc.gather(local.to(self.device).contiguous()).cpu()
        per = local.shape[0]
        rows = gathered.reshape(self.world_size, per, *local.shape[1:]).transpose(0, 1)
        return rows.reshape(per * self.world_size, *local.shape[1:])[:n]

    def broadcast(self, obj: T) -> T:
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj], from_process=0)[0]

    def broadcast_module(self, module: nn.Module) -> None:
        for tensor in [*module.parameters(), *module.buffers()]:
            torch.distributed.broadcast(tensor.data, src=0)

    def any(self, flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.acc.reduce(t, reduction="sum").item() > 0)

    def mean(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        return float(self.acc.reduce(t, reduction="mean").item())

    def barrier(self) -> None:
        self.acc.wait_for_everyone()

    def close(self) -> None:
        """Leave the process group and forget Accelerate's process-wide state, so a later
        run in the same process starts from scratch."""
        from accelerate.state import AcceleratorState

        self.acc.end_training()
        AcceleratorState._reset_state(reset_partial_state=True)


def check_precision(cfg: TrainConfig, device: torch.device) -> None:
    if cfg.precision == "fp16" and device.type == "cpu":
        raise ConfigError(
            "--precision fp16 needs a GPU (CPUs have no fp16 autocast); use --precision bf16 "
            "or fp32 on a CPU"
        )


def make_runtime(cfg: TrainConfig, device: torch.device) -> Runtime:
    """The runtime for one process of a run: Accelerate when a launcher started several
    processes, or for mixed precision on a GPU; else the plain one (no Accelerate import)."""
    check_precision(cfg, device)
    world = launcher_world_size() or 1
    if world == 1 and (device.type != "cuda" or cfg.precision == "fp32"):
        return Runtime(device)
    if device.type == "cuda" and device.index is not None and world == 1:
        torch.cuda.set_device(device)
    runtime = AccelerateRuntime(cpu=device.type == "cpu", precision=cfg.precision)
    logger.info("process %d of %d on %s (%s)", runtime.rank, world, runtime.device, cfg.precision)
    return runtime


@contextlib.contextmanager
def running(cfg: TrainConfig, device: torch.device) -> Iterator[Runtime]:
    """:func:`make_runtime`, closed at the end."""
    runtime = make_runtime(cfg, device)
    try:
        yield runtime
    finally:
        runtime.close()
