"""Grad-CAM heat maps: where in an image a classifier looked for the class it chose.

The maps come from the ``grad-cam`` package (pytorch-grad-cam); this module is the only one
that imports it. The target layer is the one whose output is the model's
``forward_features`` map, taken from each architecture's own metadata:

- transferlab's CNNs (``convnet*``: ``blocks``; ``*alexnet``: ``stages``) and torchvision
  wrappers (``tv/...``: ``features_act``, the module applied last to the trunk's output);
- timm models: the last entry of timm's ``feature_info`` (the deepest stage), except where a
  layer after it still belongs to ``forward_features`` (EfficientNet's
  ``conv_head`` + ``bn2``, listed in :data:`TIMM_FINAL_LAYERS`).

Vision transformers (token outputs, no spatial map) are not supported yet: a clear
:class:`~transferlab.errors.ModelError` says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from transferlab.data.transforms import Preprocessing, eval_batch, normalize, to_base
from transferlab.errors import ConfigError, ModelError
from transferlab.files import replace_when_done

logger = logging.getLogger(__name__)

# The one-line refusal of ``predict --explain`` and ``Model.explain`` on an ONNX model.
NEEDS_TORCH = (
    "--explain needs the torch backend (Grad-CAM takes gradients, ONNX Runtime gives none); "
    "give a bundle or run folder without --backend onnx"
)
# timm classes whose forward_features runs layers after the last feature_info stage.
TIMM_FINAL_LAYERS = {"EfficientNet": "bn2"}
# transferlab's own classes: the module whose output is forward_features' output.
OWN_FINAL_LAYERS = {"ConvNet": "blocks", "AlexNet": "stages", "TorchvisionModel": "features_act"}


def _named(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise ModelError(
            f"Grad-CAM: {type(model).__name__} has no layer '{name}' to explain"
        ) from exc


def target_layer(model: nn.Module) -> nn.Module:
    """The layer whose activations Grad-CAM weighs (see the module docstring)."""
    cls = type(model).__name__
    if hasattr(model, "patch_embed"):
        raise ModelError(
            f"Grad-CAM explanations are not supported yet for {cls} (a vision transformer: "
            "no spatial feature map); use a CNN such as tf_efficientnet_lite0 or convnet2"
        )
    if cls in OWN_FINAL_LAYERS:
        return _named(model, OWN_FINAL_LAYERS[cls])
    if cls in TIMM_FINAL_LAYERS:
        return _named(model, TIMM_FINAL_LAYERS[cls])
    info = getattr(model, "feature_info", None)
    if info:
        last = info[-1]
        return _named(model, str(last["module"] if isinstance(last, dict) else last))
    raise ModelError(
        f"Grad-CAM explanations are not supported yet for {cls}: it names no feature layer "
        "(timm feature_info); use a CNN such as tf_efficientnet_lite0 or convnet2"
    )


def grad_cam(model: nn.Module, x: torch.Tensor, classes: Sequence[int]) -> np.ndarray:
    """Heat maps (N, H, W) in [0, 1] at the input's size, one per image, for ``classes``.

    ``x`` is the model's normalised input. Works with frozen weights: the input asks for a
    gradient so the target layer's activations have one.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = target_layer(model)
    was_training = model.training
    device = next(model.parameters()).device
    x = x.to(device).detach().clone().requires_grad_(True)
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    try:
        with torch.enable_grad(), GradCAM(model=model, target_layers=[layer]) as cam:
            maps = cam(input_tensor=x, targets=targets)
    except ValueError as exc:  # the package's word for a map that is not (N, C, H, W)
        raise ModelError(
            f"Grad-CAM explanations are not supported yet for {type(model).__name__} "
            f"({exc}); use a CNN"
        ) from exc
    finally:
        model.train(was_training)
    return np.nan_to_num(np.asarray(maps, dtype=np.float32))


def center_view(img: Image.Image, prep: Preprocessing) -> tuple[np.ndarray, torch.Tensor]:
    """What the model sees at evaluation: (RGB uint8 (S, S, 3), normalised (1, 3, S, S))."""
    x = eval_batch(torch.from_numpy(to_base(img, prep)).unsqueeze(0), prep)
    size, base = prep.input_size, prep.base_size
    top = (base - size) // 2
    rgb = to_base(img, prep)[:, top : top + size, top : top + size].transpose(1, 2, 0)
    return np.ascontiguousarray(rgb), x


def whole_view(img: Image.Image, prep: Preprocessing) -> tuple[np.ndarray, torch.Tensor]:
    """The whole image squashed to the input size, so a map covers every pixel of it (the
    saliency crop needs that; the model trained on random aspect ratios, so it copes)."""
    size = prep.input_size
    rgb = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().unsqueeze(0)
    return np.ascontiguousarray(rgb), normalize(x, prep)


def overlay(rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The heat map in the JET colours over the photo, as RGB uint8."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return np.asarray(
        show_cam_on_image(rgb.astype(np.float32) / 255.0, heat, use_rgb=True), dtype=np.uint8
    )


def save_png(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 array as a PNG, atomically."""
    replace_when_done(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))
    return path


def explain_image(
    model: nn.Module, prep: Preprocessing, img: Image.Image, class_index: int
) -> np.ndarray:
    """The overlay (RGB uint8, input size) of ``class_index``'s map on the centre view."""
    rgb, x = center_view(img, prep)
    return overlay(rgb, grad_cam(model, x, [class_index])[0])


def _free_name(out_dir: Path, stem: str, taken: set[str]) -> Path:
    # Photos of the same name in different folders each get their own file.
    name, n = f"{stem}.gradcam.png", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.gradcam.png"
    taken.add(name)
    return out_dir / name


def write_explanations(
    model: nn.Module,
    prep: Preprocessing,
    class_names: Sequence[str],
    items: Sequence[tuple[Path, str]],
    out_dir: Path,
) -> list[Path]:
    """One heat-map overlay PNG per ``(image, class name)`` in ``out_dir``; their paths."""
    from transferlab.data.images import load_image

    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--explain {out_dir} is a file; give a folder for the heat maps")
    out_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    written = []
    for path, label in items:
        rgb = explain_image(model, prep, load_image(path), list(class_names).index(label))
        written.append(save_png(_free_name(out_dir, path.stem, taken), rgb))
        logger.debug("explained %s as %s", path, label)
    return written


def heat_map_pngs(bundle_dir: Path, items: Sequence[tuple[Path, str]]) -> list[bytes | None]:
    """PNG overlays (centre view) of each photo's map for its class, from the bundle in
    ``bundle_dir``; None for a photo that cannot be read or a label that is no class.
    One batched Grad-CAM pass: a report pays for one backward, not one per photo."""
    import io

    from transferlab.bundle import load_bundle
    from transferlab.data.images import ImageReadError, load_image

    bundle = load_bundle(bundle_dir)
    names, prep = bundle.class_names, bundle.preprocessing
    views: dict[int, tuple[np.ndarray, torch.Tensor, int]] = {}
    for i, (path, label) in enumerate(items):
        try:
            img = load_image(path)
        except ImageReadError:
            continue
        if label in names:
            views[i] = (*center_view(img, prep), names.index(label))
    if not views:
        return [None] * len(items)
    x = torch.cat([v[1] for v in views.values()])
    heats = grad_cam(bundle.model.eval(), x, [v[2] for v in views.values()])
    pngs: list[bytes | None] = [None] * len(items)
    for (i, (rgb, _, _)), heat in zip(views.items(), heats, strict=True):
        buf = io.BytesIO()
        Image.fromarray(overlay(rgb, heat)).save(buf, format="PNG")
        pngs[i] = buf.getvalue()
    return pngs
