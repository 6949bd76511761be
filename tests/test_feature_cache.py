"""Frozen-backbone phases train the head on cached features, with the same results."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from transferlab.config import from_dict
from transferlab.pipeline import train_run


@pytest.mark.slow
def test_cached_linear_probe_matches_the_uncached_path(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    data = class_folders(8)
    results = {}
    for cached in (True, False):
        cfg = from_dict(
            {},
            {
                "data.path": str(data),
                "model.image_size": 64,
                "train.strategy": "linear-probe",
                "train.epochs": 3,
                "train.batch_size": 8,
                "train.feature_cache": cached,
            },
        )
        out = tmp_path / f"cached-{cached}"
        train_run(cfg, out)
        results[cached] = json.loads((out / "metrics.json").read_text())
        results[cached]["history"] = (out / "history.csv").read_text().splitlines()
    on, off = results[True], results[False]
    assert on["accuracy"] == pytest.approx(off["accuracy"], abs=1e-6)
    assert on["macro_f1"] == pytest.approx(off["macro_f1"], abs=1e-6)
    for a, b in zip(on["history"][1:], off["history"][1:], strict=True):
        la, lb = a.split(","), b.split(",")
        assert float(la[2]) == pytest.approx(float(lb[2]), rel=1e-4)  # train_loss
        assert float(la[3]) == pytest.approx(float(lb[3]), rel=1e-4)  # val_loss
