"""The ONNX Runtime backend gives the PyTorch backend's probabilities for a bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trained_model import CLASSES, held_out_photos
from transferlab.backends import OnnxBackend, TorchBackend, load_backend
from transferlab.data.images import load_image
from transferlab.data.transforms import to_base


@pytest.mark.slow
def test_a_bundle_without_model_onnx_is_exported_on_the_fly(run: Path) -> None:
    assert not (run / "model" / "model.onnx").exists()
    ort, pt = load_backend(run, "onnx"), load_backend(run)
    assert isinstance(ort, OnnxBackend) and isinstance(pt, TorchBackend)
    assert not (run / "model" / "model.onnx").exists()  # nothing written into the bundle
    assert ort.class_names == pt.class_names == list(CLASSES)
    photos = [held_out_photos(c, 1)[0] for c in CLASSES]
    images = np.stack([to_base(load_image(p), pt.preprocessing) for p in photos])
    for tta in ("none", "ten-crop"):
        a, b = ort.predict(images, tta), pt.predict(images, tta)
        assert torch.allclose(a, b, atol=1e-4)
        assert a.argmax(1).tolist() == [0, 1, 2]
    assert ort.describe()["backend"] == "onnx"
    assert ort.describe()["class_names"] == list(CLASSES)
