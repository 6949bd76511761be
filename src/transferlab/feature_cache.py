"""Frozen-backbone features kept on disk, so runs that share a backbone extract them once.

A linear probe or a two-stage warm-up trains only the head on features that depend on
nothing but the backbone's weights, the preprocessing and the images. The engine keeps
them in memory for the length of a run; with a cache directory (``train.feature_cache_dir``,
and by default for every run of ``transferlab compare``) they also outlive it: the next
run with the same backbone, weights, preprocessing, precision and image contents loads
them instead of running the backbone again.

The key is a SHA-256 over all of those (the weights tensor by tensor, the images as the
decoded pixels in order, or the files' bytes when they are read lazily), so any change
to any of them is a different file: nothing is ever invalidated in place. Files are
safetensors (never unpickled), written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from transferlab.data.store import ImageSet
from transferlab.data.transforms import Preprocessing
from transferlab.files import replace_when_done
from transferlab.models.registry import classifier_keys

logger = logging.getLogger(__name__)

FORMAT = "transferlab-features-1"


def _update_tensor(h: hashlib._Hash, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def backbone_digest(model: nn.Module) -> str:
    """SHA-256 of the architecture and every tensor outside the classifier."""
    head = classifier_keys(model)
    h = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in model.state_dict().items():
        if name in head:
            continue
        h.update(name.encode())
        _update_tensor(h, tensor)
    return h.hexdigest()


def images_digest(data: ImageSet) -> str:
    """SHA-256 of the images in order: decoded pixels if in memory, else file bytes."""
    h = hashlib.sha256(f"{len(data)}".encode())
    if data.images is not None:
        _update_tensor(h, data.images)
        return h.hexdigest()
    for sample in data.samples:
        with open(sample.path, "rb") as fh:
            h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


def cache_key(backbone: str, prep: Preprocessing, precision: str, images: str) -> str:
    parts = [FORMAT, backbone, repr(prep), precision, images]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


class FeatureCache:
    """Features by key under ``directory`` (created on first write)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def load(self, key: str, rows: int) -> torch.Tensor | None:
        """The stored features, or None if absent, unreadable or of the wrong length."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            features = load_file(str(path))["features"]
        except Exception as exc:  # a damaged file is a miss, never a crash
            logger.warning("ignoring damaged feature cache %s (%s)", path, exc)
            return None
        return features if features.shape[0] == rows else None

    def save(self, key: str, features: torch.Tensor) -> None:
        """Write atomically; a read-only or full disk costs the cache, not the run."""
        tensors = {"features": features.contiguous()}
        try:
            replace_when_done(self.path(key), lambda tmp: save_file(tensors, str(tmp)))
        except OSError as exc:
            logger.warning("could not write the feature cache in %s (%s)", self.directory, exc)
