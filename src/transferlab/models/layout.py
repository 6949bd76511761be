"""Memory layout of a model's tensors.

Channels-last (NHWC) storage lets oneDNN on the CPU and cuDNN on GPUs pick their fastest
convolution kernels: on a 2-core CPU, a full EfficientNet-Lite0 epoch at 128 px ran 1.6x
and feature extraction 1.9x faster than with the default NCHW layout
(benchmarks/README.md), with the same numbers up to floating-point rounding. Inputs must
follow the layout of the weights they meet.
"""

from __future__ import annotations

import torch
from torch import nn


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def for_inference(model: nn.Module) -> nn.Module:
    """Store the model's weights NHWC (in place), as predict, serve and the speed
    measurement run it; a TorchScript module keeps the layout it was traced with."""
    if not isinstance(model, torch.jit.ScriptModule):
        model.to(memory_format=torch.channels_last)
    return model


def is_channels_last(model: nn.Module) -> bool:
    """Whether the model's (spatial) convolution weights are stored NHWC."""
    for p in model.parameters():
        if p.dim() == 4 and p.shape[-1] * p.shape[-2] > 1:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False
