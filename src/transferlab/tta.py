"""Test-time augmentation: several views of each image, softmax averaged over the views.

Views are cut from the uint8 "base" image (shorter side at ``input_size / crop_pct``), the
same square every other path starts from, so ``none`` is exactly the evaluation transform:

- ``none``: the centre crop;
- ``flip``: the centre crop and its mirror image;
- ``five-crop``: the four corner crops and the centre crop;
- ``ten-crop``: the five crops and their mirror images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from transferlab.data.transforms import Preprocessing, at_base, normalize
from transferlab.errors import ConfigError

TTA_MODES = ("none", "flip", "five-crop", "ten-crop")
NUM_VIEWS = {"none": 1, "flip": 2, "five-crop": 5, "ten-crop": 10}


def check_mode(mode: str) -> str:
    if mode not in TTA_MODES:
        raise ConfigError(f"--tta '{mode}' is not one of: {', '.join(TTA_MODES)}")
    return mode


def _crops(x: torch.Tensor, size: int, five: bool) -> list[torch.Tensor]:
    h, w = x.shape[-2], x.shape[-1]
    top, left = (h - size) // 2, (w - size) // 2
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size)] if five else []
    return [x[..., t : t + size, lf : lf + size] for t, lf in [*corners, (top, left)]]


def views(x: torch.Tensor, prep: Preprocessing, mode: str) -> Iterator[torch.Tensor]:
    """uint8 squares (N, 3, B, B) -> each view as a normalised float batch (N, 3, S, S)."""
    check_mode(mode)
    # From the square at the base side, whatever side the images are stored at.
    for crop in _crops(at_base(x, prep), prep.input_size, five=mode in ("five-crop", "ten-crop")):
        view = normalize(crop.float(), prep)
        yield view
        if mode in ("flip", "ten-crop"):
            yield view.flip(-1)


def tta_probabilities(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    prep: Preprocessing,
    mode: str = "none",
) -> torch.Tensor:
    """Mean of ``forward`` (normalised batch -> probabilities) over the views of ``x``."""
    total: torch.Tensor | None = None
    count = 0
    for view in views(x, prep, mode):
        probs = forward(view)
        total = probs if total is None else total + probs
        count += 1
    assert total is not None  # every mode has at least one view
    return total / count
