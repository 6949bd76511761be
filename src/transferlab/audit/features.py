"""Pooled features of the pretrained backbone, for near-duplicates that hashes miss and for
the label probe: extracted by :func:`transferlab.engine.extract_features` and kept in the
feature cache (:mod:`transferlab.feature_cache`) under the same kind of key as training's."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from transferlab.data.discover import Sample
from transferlab.data.store import decode_all
from transferlab.engine import extract_features, resolve_device
from transferlab.feature_cache import FeatureCache, backbone_digest, cache_key, images_digest
from transferlab.models.registry import create_model, resolve_preprocessing

logger = logging.getLogger(__name__)

PRECISION = "fp32"


def backbone_features(
    samples: Sequence[Sample],
    model_name: str,
    image_size: int | None,
    cache_dir: Path | None,
    batch_size: int = 64,
) -> torch.Tensor:
    """(N, D) features of readable ``samples`` in order (the caller drops unreadable ones)."""
    prep = resolve_preprocessing(model_name, image_size)
    classes = sorted({s.label for s in samples})
    images, bad = decode_all(list(samples), classes, prep, 4096, warn=False)
    if bad:  # the audit passes readable files only
        raise ValueError(f"unreadable file given to backbone_features: {bad[0][0]}")
    model, _ = create_model(model_name, len(classes), "imagenet")
    device = resolve_device("auto")
    if cache_dir is None:
        return extract_features(model, images, prep, batch_size, device, PRECISION)
    store = FeatureCache(cache_dir)
    key = cache_key(backbone_digest(model), prep, PRECISION, images_digest(images))
    found = store.load(key, len(images))
    if found is not None:
        logger.info("features of %d images from the cache %s", len(images), store.path(key))
        return found
    features = extract_features(model, images, prep, batch_size, device, PRECISION)
    store.save(key, features)
    return features
