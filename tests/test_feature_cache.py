"""Frozen-backbone phases train the head on cached features, with the same results."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from transferlab.config import RunConfig, from_dict
from transferlab.data.transforms import Preprocessing
from transferlab.feature_cache import FeatureCache, cache_key
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


def _probe(data: Path, cache: Path, **extra: object) -> RunConfig:
    overrides: dict[str, object] = {
        "data.path": str(data),
        "model.image_size": 64,
        "train.strategy": "linear-probe",
        "train.epochs": 2,
        "train.batch_size": 8,
        "train.feature_cache_dir": str(cache),
    }
    return from_dict({}, overrides | extra)


@pytest.mark.slow
def test_a_cache_dir_lets_the_next_run_skip_extraction(
    class_folders: Callable[..., Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, cache = class_folders(6), tmp_path / "features"
    first = train_run(_probe(data, cache), tmp_path / "first")
    files = sorted(cache.glob("*.safetensors"))
    assert len(files) == 2  # train and val features
    stamps = [f.stat().st_mtime_ns for f in files]

    engine_log = logging.getLogger("transferlab.engine")
    engine_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="transferlab.engine"):
            second = train_run(_probe(data, cache), tmp_path / "second")
    finally:
        engine_log.removeHandler(caplog.handler)
    hits = {r.getMessage() for r in caplog.records if "from the cache" in r.getMessage()}
    assert len(hits) == 2  # train and val (a record may arrive twice: own handler + root)
    assert [f.stat().st_mtime_ns for f in sorted(cache.glob("*.safetensors"))] == stamps
    assert second.metrics["macro_f1"] == first.metrics["macro_f1"]
    assert second.metrics["confusion_matrix"] == first.metrics["confusion_matrix"]

    # Other preprocessing: new keys for both splits, the old files kept.
    train_run(_probe(data, cache, **{"model.image_size": 72}), tmp_path / "size")
    assert len(list(cache.glob("*.safetensors"))) == 4
    # One photo's content changes (same name): only its split's features are new.
    photo = sorted(data.rglob("*.jpg"))[0]
    with Image.open(photo) as im:
        im.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(photo)
    train_run(_probe(data, cache), tmp_path / "changed")
    assert len(list(cache.glob("*.safetensors"))) == 5


def test_a_damaged_cache_file_is_a_miss_not_a_crash(tmp_path: Path) -> None:
    store = FeatureCache(tmp_path)
    features = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    store.save("k", features)
    assert torch.equal(store.load("k", 3), features)  # type: ignore[arg-type]
    assert store.load("k", 4) is None  # other number of images
    assert store.load("absent", 3) is None
    store.path("k").write_bytes(b"not a safetensors file")
    assert store.load("k", 3) is None
    assert not list(tmp_path.glob(".*.tmp*"))


def test_the_key_depends_on_preprocessing_and_precision() -> None:
    prep = Preprocessing(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    base = cache_key("b", prep, "fp32", "i")
    assert cache_key("b", prep, "fp32", "i") == base
    others = {
        cache_key("c", prep, "fp32", "i"),
        cache_key("b", Preprocessing(72, prep.mean, prep.std), "fp32", "i"),
        cache_key("b", Preprocessing(64, prep.mean, prep.std, crop_pct=1.0), "fp32", "i"),
        cache_key("b", prep, "bf16", "i"),
        cache_key("b", prep, "fp32", "j"),
    }
    assert base not in others and len(others) == 5
