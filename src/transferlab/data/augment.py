"""Augmentation presets and the batch-level parts: colour jitter, RandAugment, mixup/cutmix.

``resolve_augment`` turns the config (a preset plus any knobs set by hand) into an
:class:`AugmentSpec` with every value filled; ``augment_batch`` applies it to a uint8 batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from transferlab.config import AugmentConfig
from transferlab.data.transforms import Preprocessing, eval_batch, normalize, train_batch


@dataclass(frozen=True)
class AugmentSpec:
    preset: str
    hflip: float
    scale_min: float
    rotation: float
    color_jitter: float
    randaugment: int
    randaugment_magnitude: int
    mixup: float
    cutmix: float

    @property
    def enabled(self) -> bool:
        return self.preset != "none" or any(
            (
                self.hflip,
                self.scale_min < 1,
                self.rotation,
                self.color_jitter,
                self.randaugment,
                self.mixup,
                self.cutmix,
            )
        )


PRESETS: dict[str, AugmentSpec] = {
    "none": AugmentSpec("none", 0.0, 1.0, 0.0, 0.0, 0, 9, 0.0, 0.0),
    "light": AugmentSpec("light", 0.5, 0.35, 0.0, 0.0, 0, 9, 0.0, 0.0),
    "strong": AugmentSpec("strong", 0.5, 0.08, 15.0, 0.3, 2, 9, 0.2, 1.0),
}


def resolve_augment(cfg: AugmentConfig, default_preset: str) -> AugmentSpec:
    """The preset (``default_preset`` if unset) with the hand-set knobs on top."""
    base = PRESETS[cfg.preset or default_preset]
    chosen = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "preset"}
    return dataclasses.replace(base, **{k: v for k, v in chosen.items() if v is not None})


def _color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Per-image brightness, contrast and saturation factors in [1-s, 1+s]; x in [0, 255]."""
    n = x.shape[0]

    def factors() -> torch.Tensor:
        f = 1 + (torch.rand(n, generator=gen) * 2 - 1) * strength
        return f.to(x.device, x.dtype).view(n, 1, 1, 1)

    x = x * factors()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factors() + mean
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = (x - gray) * factors() + gray
    return x.clamp(0, 255)


def _randaugment(x: torch.Tensor, ops: int, magnitude: int) -> torch.Tensor:
    from torchvision.transforms import v2

    ra = v2.RandAugment(num_ops=ops, magnitude=magnitude)
    return torch.stack([ra(img) for img in x])


def augment_batch(
    x: torch.Tensor, prep: Preprocessing, spec: AugmentSpec, gen: torch.Generator
) -> torch.Tensor:
    """uint8 base images -> augmented, normalised float input."""
    if not spec.enabled:
        return eval_batch(x, prep)
    if spec.randaugment:
        x = _randaugment(x, spec.randaugment, spec.randaugment_magnitude)
    out = train_batch(
        x,
        prep,
        gen,
        scale=(spec.scale_min, 1.0),
        hflip=spec.hflip,
        rotation=spec.rotation,
        normalize=False,
    )
    if spec.color_jitter:
        out = _color_jitter(out, spec.color_jitter, gen)
    return normalize(out, prep)


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, spec: AugmentSpec, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix (one of them per batch, at random) with soft targets."""
    targets = F.one_hot(y, num_classes).float()
    use_cutmix = spec.cutmix > 0 and (spec.mixup == 0 or bool(torch.rand(1, generator=gen) < 0.5))
    alpha = spec.cutmix if use_cutmix else spec.mixup
    if alpha <= 0 or x.shape[0] < 2:
        return x, targets
    # Beta(alpha, alpha) from numpy, seeded from the run's generator: torch's Gamma/Beta
    # samplers take no generator and would draw from the global RNG, so the same run seed
    # would not give the same mixing after anything else touched the global seed.
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
    if use_cutmix:
        h, w = x.shape[-2:]
        ch, cw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        cy = int(torch.randint(0, h, (1,), generator=gen))
        cx = int(torch.randint(0, w, (1,), generator=gen))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * targets + (1 - lam) * targets[perm.cpu()]
