"""Preprocessing tied to a model, and batched tensor transforms.

Images are decoded once to a square uint8 "base" image (shorter side resized to
``input_size / crop_pct``, centre-cropped). A store may keep that square at a smaller
side (:func:`stored_side`: no photo is upsampled just to be kept), and the batched
transforms resize on the fly. From there:

- evaluation resizes the square to the base side (the pixels ``to_base`` would have
  made) and takes the centre ``input_size`` crop, exactly timm's eval transform;
- training takes a random resized crop with a random horizontal flip, done for a
  whole batch at once with ``affine_grid``/``grid_sample`` on the model's device
  (fractions of the square, so any stored side gives the same views).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

_PIL_INTERPOLATION = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input; derived from the backbone's pretrained config."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    @property
    def base_size(self) -> int:
        return math.floor(self.input_size / self.crop_pct)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Preprocessing:
        return cls(
            input_size=int(raw["input_size"]),
            mean=tuple(float(v) for v in raw["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in raw["std"]),  # type: ignore[arg-type]
            interpolation=str(raw.get("interpolation", "bicubic")),
            crop_pct=float(raw.get("crop_pct", 0.875)),
        )


# torch has no Lanczos resize; bicubic is the nearest kernel it has.
_TORCH_INTERPOLATION = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}


def stored_side(shorter_sides: Iterable[int], prep: Preprocessing) -> int:
    """The side a set of images is stored at: the largest shorter side among them (the most
    detail any one has), at most the base side; the base side when none is known.

    One side for the whole set, so the store stays one preallocated tensor that batches
    are sliced from; the transforms resize each batch to the model's size on the fly.
    """
    return min(prep.base_size, max(shorter_sides, default=prep.base_size))


def to_base(img: Image.Image, prep: Preprocessing, side: int | None = None) -> np.ndarray:
    """RGB PIL image -> uint8 array (3, S, S): shorter side resized to S, centre square.

    S is ``side`` (a store's :func:`stored_side`), else the base side."""
    base = side or prep.base_size
    w, h = img.size
    scale = base / min(w, h)
    new_w, new_h = max(base, round(w * scale)), max(base, round(h * scale))
    resample = _PIL_INTERPOLATION.get(prep.interpolation, Image.Resampling.BICUBIC)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample=resample)
    left, top = (new_w - base) // 2, (new_h - base) // 2
    img = img.crop((left, top, left + base, top + base))
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def _normalize(x: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    mean = torch.tensor(prep.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(prep.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) * 255.0
    return (x - mean) / std


def at_base(x: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 squares (N, 3, S, S) -> uint8 squares at the base side, as :func:`to_base`
    would have made them from the same photos: resized with the model's interpolation,
    antialiased. torch's antialiased kernels are Pillow's, so on the CPU (uint8 in, uint8
    out) the pixels are Pillow's, and predictions from a store at its stored side match
    those of one image through :func:`to_base`; elsewhere (float, rounded) within a level.

    Resizing the whole square and then cropping, rather than cropping a fraction and
    resizing that, keeps the crop on Pillow's pixel grid, hence the same pixels.
    """
    base = prep.base_size
    if x.shape[-2:] == (base, base):
        return x
    mode = _TORCH_INTERPOLATION.get(prep.interpolation, "bicubic")
    smooth = mode != "nearest"
    kwargs: dict[str, Any] = {"align_corners": False, "antialias": True} if smooth else {}
    if x.device.type == "cpu":
        return F.interpolate(x, size=(base, base), mode=mode, **kwargs)
    # Other devices resize uint8 with fewer kernels: float, then back to 8-bit levels.
    out = F.interpolate(x.float(), size=(base, base), mode=mode, **kwargs)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def centre_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    top = (x.shape[-2] - side) // 2
    left = (x.shape[-1] - side) // 2
    return x[..., top : top + side, left : left + side]


def eval_batch(x: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 squares (N, 3, S, S) -> normalised float (N, 3, size, size): the centre crop
    of the square at the base side (:func:`at_base`), timm's eval transform."""
    crop = centre_crop(at_base(x, prep), prep.input_size)
    return _normalize(crop.float(), prep).contiguous()


def train_batch(
    x: torch.Tensor,
    prep: Preprocessing,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    rotation: float = 0.0,
    normalize: bool = True,
) -> torch.Tensor:
    """Random resized crop, horizontal flip and rotation of a uint8 batch, as float.

    One affine warp per image. The random numbers come from ``generator`` on the CPU,
    so a seeded run draws the same crops on any device. Normalised unless told not to.
    """
    n = x.shape[0]
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_r)
    # Crop width and height as fractions of the base side, clamped inside the image.
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=generator) < hflip, -1.0, 1.0)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(rotation)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w * flip * cos
    theta[:, 0, 1] = -h * sin
    theta[:, 0, 2] = cx
    theta[:, 1, 0] = w * flip * sin
    theta[:, 1, 1] = h * cos
    theta[:, 1, 2] = cy
    size = prep.input_size
    xf = x.float()
    theta = theta.to(device=x.device, dtype=xf.dtype)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    out = F.grid_sample(xf, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return _normalize(out, prep).contiguous() if normalize else out


def normalize(x: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """Float images in [0, 255] -> the model's normalised input."""
    return _normalize(x, prep).contiguous()
