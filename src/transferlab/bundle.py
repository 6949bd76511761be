"""The saved model: ``model.safetensors`` + ``model.json``. Loading never unpickles anything.

``model.json`` holds what ``predict``, ``evaluate``, ``export`` and ``serve`` need: the
architecture, class names in index order and the preprocessing, plus a training summary.
``display_names`` (same order) are what people read; the class names (folder names) stay
the keys.

A bundle of a timm architecture with timm's own (linear) classifier also holds timm's
Hugging Face ``config.json`` (architecture, num_classes, label_names, pretrained_cfg with the
preprocessing), so it is a timm model folder too:
``timm.create_model("local-dir:RUN/model", pretrained=True)``. transferlab's own CNNs
(``convnet1``...) are registered in timm's registry when ``transferlab`` is imported.
Bundles with an MLP head or a torchvision (``tv/``) architecture get no ``config.json``:
timm cannot rebuild them by name, so they load with :func:`load_bundle` only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file, save_file
from timm.models._hub import save_config_for_hf
from torch import nn

from transferlab import __version__
from transferlab.data.transforms import Preprocessing
from transferlab.errors import BundleError, ConfigError, ModelError
from transferlab.files import replace_when_done
from transferlab.models.registry import build_from_meta

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
CONFIG_FILE = "config.json"  # timm / Hugging Face model config


@dataclass
class Bundle:
    model: nn.Module
    architecture: str
    class_names: list[str]
    preprocessing: Preprocessing
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def display_names(self) -> list[str]:
        return display_names(self.meta)


def display_names(meta: dict[str, Any]) -> list[str]:
    """The classes as people read them, in index order (``class_names`` stay the keys);
    bundles from before display names, or with a damaged list, show the folder names."""
    classes = [str(c) for c in meta["class_names"]]
    shown = meta.get("display_names")
    if isinstance(shown, list) and len(shown) == len(classes):
        return [str(s) for s in shown]
    return classes


def timm_rebuildable(model: nn.Module, architecture: str, extra: dict[str, Any]) -> bool:
    """Whether ``timm.create_model(architecture)`` builds a model these weights fit."""
    head = (extra.get("head") or {}).get("kind", "linear")
    return (
        head == "linear"
        and not architecture.startswith("tv/")
        and timm.is_model(architecture)
        and hasattr(model, "pretrained_cfg")
    )


def write_timm_config(
    path: Path, model: nn.Module, class_names: list[str], preprocessing: Preprocessing
) -> None:
    """timm's ``config.json`` for ``model``, written by timm itself, with our preprocessing."""
    size = preprocessing.input_size
    pretrained_cfg = {
        "tag": "transferlab",  # not the ImageNet checkpoint the fine-tune started from
        "input_size": (3, size, size),
        "mean": preprocessing.mean,
        "std": preprocessing.std,
        "interpolation": preprocessing.interpolation,
        "crop_pct": preprocessing.crop_pct,
        "crop_mode": "center",
    }
    config = {"label_names": list(class_names), "pretrained_cfg": pretrained_cfg}
    save_config_for_hf(model, str(path), model_config=config)


def _save_timm_config(
    directory: Path,
    model: nn.Module,
    architecture: str,
    class_names: list[str],
    preprocessing: Preprocessing,
    meta: dict[str, Any],
) -> None:
    """``config.json`` beside the weights when timm can rebuild the model, else none."""
    out = directory / CONFIG_FILE
    if not timm_rebuildable(model, architecture, meta):
        logger.debug("%s: no timm config.json (timm cannot rebuild it by name)", architecture)
        out.unlink(missing_ok=True)  # a stale one would describe other weights
        return
    try:
        replace_when_done(out, lambda p: write_timm_config(p, model, class_names, preprocessing))
    except (TypeError, ValueError) as exc:  # timm refuses model args it cannot serialise
        out.unlink(missing_ok=True)
        logger.warning("no timm config.json for %s (%s); the bundle still loads", architecture, exc)


def save_bundle(
    directory: Path,
    model: nn.Module,
    architecture: str,
    class_names: list[str],
    preprocessing: Preprocessing,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle folder; files are replaced atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "transferlab_version": __version__,
        "architecture": architecture,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "preprocessing": preprocessing.to_dict(),
        "drop_rate": float(getattr(model, "drop_rate", 0.0)),
        **(extra or {}),
    }
    replace_when_done(directory / WEIGHTS_FILE, lambda p: save_file(state, str(p)))
    _save_timm_config(directory, model, architecture, list(class_names), preprocessing, meta)
    replace_when_done(
        directory / META_FILE,
        lambda p: p.write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8"),
    )
    return directory


def _one_line(exc: Exception, limit: int = 300) -> str:
    """An exception's message on one line (torch's state-dict errors span many)."""
    return " ".join(str(exc).split())[:limit]


def find_bundle_dir(path: Path) -> Path:
    """Accept a bundle folder or a run folder (which holds ``model/``)."""
    for candidate in (path, path / "model"):
        if (candidate / META_FILE).is_file():
            return candidate
    if not path.exists():
        raise BundleError(f"model not found: {path}; give a run folder or its model/ folder")
    raise BundleError(
        f"{path} has no {META_FILE}; give a run folder made by 'transferlab train' or its model/"
    )


def read_meta(path: Path) -> dict[str, Any]:
    meta_file = find_bundle_dir(path) / META_FILE
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(
            f"{meta_file} is damaged ({exc}); re-export or retrain the model"
        ) from exc
    if not isinstance(meta, dict):
        raise BundleError(
            f"{meta_file} is damaged (not a JSON object); re-export or retrain the model"
        )
    for key in ("architecture", "class_names", "preprocessing"):
        if key not in meta:
            raise BundleError(f"{meta_file} lacks '{key}'; it was not written by transferlab")
    return dict(meta)


def temperature_of(meta: dict[str, Any], where: Path | str = META_FILE) -> float:
    """The temperature fitted after training (``calibration.temperature``); 1.0 for bundles
    written before temperature scaling, which therefore predict as they always did."""
    value = (meta.get("calibration") or {}).get("temperature", 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise BundleError(
            f"{where} has a damaged calibration.temperature ({value!r}); retrain the model"
        )
    return float(value)


def reject_below_of(meta: dict[str, Any], where: Path | str = META_FILE) -> float | None:
    """The bundle's default ``--reject-below`` (``reject_below``; None: answer every image)."""
    value = meta.get("reject_below")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise BundleError(
            f"{where} has reject_below {value!r}, not a probability in [0, 1]; "
            "set it again with 'transferlab reject-below'"
        )
    return float(value)


def set_reject_below(path: Path, value: float | None) -> Path:
    """Store the bundle's default reject threshold (None: answer every image) in its
    ``model.json``, rewritten atomically; returns that file."""
    if path.suffix.lower() == ".onnx":
        raise ConfigError(
            f"{path} is an ONNX export; set the threshold on its bundle and export again, "
            "or pass --reject-below to predict, serve or stream"
        )
    if value is not None and not 0 <= value <= 1:
        raise ConfigError(f"reject threshold {value} is not a probability; give one in [0, 1]")
    directory = find_bundle_dir(path)
    meta = read_meta(directory)
    meta["reject_below"] = value
    text = json.dumps(meta, indent=2, ensure_ascii=False)
    replace_when_done(directory / META_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    return directory / META_FILE


def load_bundle(path: Path, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle (or a run folder's bundle) ready for inference, in eval mode."""
    directory = find_bundle_dir(path)
    meta = read_meta(directory)
    try:
        preprocessing = Preprocessing.from_dict(meta["preprocessing"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"{directory / META_FILE} has damaged preprocessing ({exc!r}); "
            "re-export or retrain the model"
        ) from exc
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleError(f"{weights} is missing; the bundle is incomplete")
    try:
        model = build_from_meta(meta)
    except ModelError as exc:
        raise BundleError(f"{directory}: {exc}") from exc
    try:
        state = load_file(str(weights))
    except Exception as exc:
        raise BundleError(
            f"{weights} is damaged ({_one_line(exc)}); retrain or re-export the model"
        ) from exc
    try:
        model.load_state_dict(state)
    except Exception as exc:
        raise BundleError(
            f"{weights} does not match {meta['architecture']} with {len(meta['class_names'])} "
            f"classes ({_one_line(exc)}); retrain or re-export the model"
        ) from exc
    model.to(device).eval()
    return Bundle(
        model=model,
        architecture=meta["architecture"],
        class_names=list(meta["class_names"]),
        preprocessing=preprocessing,
        meta=meta,
    )
