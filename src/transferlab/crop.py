"""Object crops (the Stanford Cars recipe): each image cut to the box of its object.

A torchvision detection model (Faster R-CNN, RetinaNet, SSD/SSDlite, FCOS) finds boxes of
COCO classes; each image is cut to the largest box of the wanted classes (plus a margin),
or kept whole when there is none. Without detector weights, ``saliency`` boxes the
classifier's own Grad-CAM map instead. The result is a new dataset tree beside a CSV of
the boxes and scores; the data folder is only read.
"""

from __future__ import annotations

import csv
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

from transferlab.data.images import ImageReadError, is_image_file, load_image
from transferlab.data.transforms import Preprocessing
from transferlab.errors import ConfigError, DatasetError, WeightsError
from transferlab.files import replace_when_done
from transferlab.models.tv import hub_checkpoint

logger = logging.getLogger(__name__)

DEFAULT_DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"
# Box detectors only: keypoint and mask R-CNN give boxes too but cost far more.
DETECTOR_FAMILIES = ("fasterrcnn_", "retinanet_", "ssd", "fcos_")
BOXES_FILE = "crop-boxes.csv"
CSV_FIELDS = ("path", "source", "label", "score", "x0", "y0", "x1", "y1", "width", "height")
# Grad-CAM cells at or above this share of the peak make up the saliency box.
SALIENCY_THRESHOLD = 0.5


@dataclass(frozen=True)
class Box:
    """A box in pixel coordinates of the image (x1, y1 exclusive), with its class and score."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str
    score: float

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


Boxer = Callable[[Image.Image], Box | None]


def largest_box(boxes: Sequence[Box], wanted: set[str] | None, min_score: float) -> Box | None:
    """The largest box of a wanted class (any class if ``wanted`` is None) scoring at least
    ``min_score``; None when there is none (the caller keeps the whole image)."""
    fits = [
        b
        for b in boxes
        if b.score >= min_score and b.area > 0 and (wanted is None or b.label in wanted)
    ]
    return max(fits, key=lambda b: b.area, default=None)


def with_margin(box: Box, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` grown by ``margin`` times its width/height on each side, clamped to the image,
    as whole pixels (left, top, right, bottom) for ``Image.crop``."""
    dx, dy = (box.x1 - box.x0) * margin, (box.y1 - box.y0) * margin
    left, top = max(0, int(np.floor(box.x0 - dx))), max(0, int(np.floor(box.y0 - dy)))
    right, bottom = min(width, int(np.ceil(box.x1 + dx))), min(height, int(np.ceil(box.y1 + dy)))
    return left, top, max(right, left + 1), max(bottom, top + 1)


# --- detectors -------------------------------------------------------------------------


def detector_names() -> list[str]:
    """torchvision's box detection models, by name."""
    names = torchvision.models.list_models(module=torchvision.models.detection)
    return [n for n in names if n.startswith(DETECTOR_FAMILIES)]


def coco_categories(name: str) -> list[str]:
    """The class names (index order) of ``name``'s COCO weights; known without the weights."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    return [str(c) for c in weights.meta["categories"]]


def check_classes(classes: Sequence[str], categories: Sequence[str]) -> set[str]:
    """``--classes`` as a set, each one a COCO class the detector knows."""
    import difflib

    known = [c for c in categories if c not in ("__background__", "N/A")]
    classes = [c.strip() for c in classes if c.strip()]
    if not classes:
        raise ConfigError("--classes names no class; give COCO classes such as car,truck")
    for c in classes:
        if c not in known:
            close = difflib.get_close_matches(c, known, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
            raise ConfigError(f"--classes: '{c}' is not a COCO class of the detector; {hint}")
    return set(classes)


class Detector:
    """A torchvision detection model in eval mode, with its category names."""

    def __init__(self, model: nn.Module, categories: Sequence[str], name: str) -> None:
        self.model = model.eval()
        self.categories = list(categories)
        self.name = name

    @torch.inference_mode()
    def boxes(self, img: Image.Image) -> list[Box]:
        x = torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0)
        found = self.model([x])[0]
        out = []
        for box, label, score in zip(found["boxes"], found["labels"], found["scores"], strict=True):
            x0, y0, x1, y1 = (float(v) for v in box.tolist())
            out.append(Box(x0, y0, x1, y1, self.categories[int(label)], float(score)))
        return out


def _architecture_of(path: Path) -> str:
    # torchvision names its weight files '<model>-<hash>.pth'; a file keeps that name.
    for name in sorted(detector_names(), key=len, reverse=True):
        if path.name.startswith(name):
            return name
    raise ConfigError(
        f"--detector {path}: cannot tell the architecture from the file name; name it like "
        "torchvision's weights ('<model>-<anything>.pth', model one of "
        f"{', '.join(detector_names())})"
    )


def _from_file(path: Path) -> Detector:
    name = _architecture_of(path)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state))
    except Exception as exc:  # unpickling and shape errors come in many types
        first = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
        raise WeightsError(f"--detector {path}: not {name} weights ({first})") from exc
    return Detector(model, coco_categories(name), name)


def hub_weights_file(name: str) -> Path:
    """Where torchvision keeps ``name``'s COCO weights once downloaded."""
    return hub_checkpoint(torchvision.models.get_model_weights(name).DEFAULT.url)


def _from_hub(name: str) -> Detector:
    from transferlab.models.tv import _download_reachable  # the same download host

    cached = hub_weights_file(name)
    if not cached.is_file() and not _download_reachable():
        raise WeightsError(
            f"no weights for detector '{name}': offline and {cached} is not in the torch hub "
            "cache; copy it there, give --detector PATH, or use --saliency RUN to box the "
            "classifier's own Grad-CAM map"
        )
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except Exception as exc:  # network, hash and file errors come in many types
        first = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
        raise WeightsError(
            f"loading weights for detector '{name}' failed ({first}); give --detector PATH "
            "or use --saliency RUN"
        ) from exc
    return Detector(model, coco_categories(name), name)


def load_detector(spec: str) -> Detector:
    """``spec``: a torchvision detector name (hub weights) or a weights file of one."""
    path = Path(spec).expanduser()
    if path.is_file():
        return _from_file(path)
    if spec in detector_names():
        return _from_hub(spec)
    raise ConfigError(
        f"--detector '{spec}' is neither a weights file nor one of: {', '.join(detector_names())}"
    )


def detector_boxer(detector: Detector, wanted: set[str] | None, min_score: float) -> Boxer:
    return lambda img: largest_box(detector.boxes(img), wanted, min_score)


# --- saliency --------------------------------------------------------------------------


def saliency_box(heat: np.ndarray, width: int, height: int) -> Box | None:
    """The box around the connected region of ``heat`` (at least half its peak) that holds
    the peak, scaled from the map to a ``width`` x ``height`` image; None for a flat map."""
    from scipy import ndimage

    peak = float(heat.max()) if heat.size else 0.0
    if peak <= 0:
        return None
    regions, _ = ndimage.label(heat >= SALIENCY_THRESHOLD * peak)
    top, left = np.unravel_index(int(np.argmax(heat)), heat.shape)
    ys, xs = np.nonzero(regions == regions[top, left])
    sy, sx = height / heat.shape[0], width / heat.shape[1]
    return Box(
        xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy, "saliency", peak
    )


def saliency_boxer(model: nn.Module, prep: Preprocessing, class_names: Sequence[str]) -> Boxer:
    """Boxes around the classifier's Grad-CAM map of its own top class, on the whole image."""
    from transferlab.explain import grad_cam, whole_view

    def box(img: Image.Image) -> Box | None:
        _, x = whole_view(img, prep)
        with torch.inference_mode():
            top = int(model(x.to(next(model.parameters()).device)).argmax(dim=1)[0])
        found = saliency_box(grad_cam(model, x, [top])[0], *img.size)
        return None if found is None else replace(found, label=class_names[top])

    return box


# --- the dataset -----------------------------------------------------------------------


@dataclass
class CropSummary:
    boxed: int = 0
    whole: int = 0
    unreadable: int = 0
    csv: Path | None = None


def check_out(data: Path, out: Path) -> None:
    """The output tree must be new (or empty) and outside the data folder."""
    if not data.is_dir():
        raise DatasetError(f"data folder not found: {data}")
    d, o = data.resolve(), out.resolve()
    if o == d or d in o.parents:
        raise ConfigError(f"--out {out} is inside the data folder {data}; choose a folder outside")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose a new folder")


def _save(img: Image.Image, dest: Path) -> None:
    fmt = Image.registered_extensions().get(dest.suffix.lower(), "PNG")
    extra = {"quality": 95} if fmt == "JPEG" else {}
    replace_when_done(dest, lambda tmp: img.save(tmp, format=fmt, **extra))


def _row(
    rel: Path, source: str, box: Box | None, region: Sequence[int], size: Sequence[int]
) -> list[object]:
    # The CSV names the region really cut (the box with its margin), in the image's pixels.
    label, score = (box.label, f"{box.score:.4f}") if box else ("", "")
    return [rel.as_posix(), source, label, score, *region, *size]


def crop_dataset(data: Path, out: Path, boxer: Boxer, margin: float, source: str) -> CropSummary:
    """Cut every image under ``data`` to its box into the same place under ``out``; write
    ``out/crop-boxes.csv``. Unreadable images are logged, listed and left out."""
    check_out(data, out)
    files = sorted(p for p in data.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise DatasetError(f"no image files found in {data}")
    summary, rows = CropSummary(), list[list[object]]()
    for path in files:
        rel = path.relative_to(data)
        try:
            img = load_image(path)
        except ImageReadError as exc:
            logger.warning("%s: %s; left out", path, exc)
            summary.unreadable += 1
            rows.append([rel.as_posix(), "unreadable", "", "", "", "", "", "", "", ""])
            continue
        box = boxer(img)
        w, h = img.size
        region = with_margin(box, margin, w, h) if box else (0, 0, w, h)
        if box:
            _save(img.crop(region), out / rel)
        else:  # the original bytes: no second JPEG encoding of an image kept whole
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out / rel)
        rows.append(_row(rel, source if box else "whole", box, region, (w, h)))
        summary.boxed, summary.whole = summary.boxed + bool(box), summary.whole + (not box)
    summary.csv = out / BOXES_FILE
    replace_when_done(summary.csv, lambda tmp: _write_csv(tmp, rows))
    return summary


def _write_csv(path: Path, rows: list[list[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        writer.writerows(rows)
