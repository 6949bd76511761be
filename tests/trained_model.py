"""A small model really trained on the example photos, built once per test session.

Every test module that needs a bundle calls :func:`trained_run` from its own
session-scoped fixture; the run is written once under pytest's base temp folder and
reused, so the session trains once however many modules use it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import copy_photos
from transferlab.config import from_dict
from transferlab.pipeline import train_run

# Three classes that look different at 96 px, so predictions follow the content.
CLASSES = ("altar", "dome(outer)", "stained_glass")
PER_CLASS = 12
IMAGE_SIZE = 96


def trained_run(factory: pytest.TempPathFactory) -> Path:
    """A run folder (``model/`` bundle, ``split.csv``, ``config.yaml``) at 96 px."""
    base = factory.getbasetemp()
    run = base / "trained-run"
    if (run / "model" / "model.json").is_file():
        return run
    shutil.rmtree(run, ignore_errors=True)
    data = base / "trained-run-data"
    for label in CLASSES:
        copy_photos(label, data / label, PER_CLASS)
    cfg = from_dict(
        {},
        {
            "data.path": str(data),
            "data.val_fraction": 0.25,
            "data.test_fraction": 0.0,
            "model.image_size": IMAGE_SIZE,
            "train.epochs": 0,
            "train.head_epochs": 8,
            "train.batch_size": 16,
        },
    )
    train_run(cfg, run)
    return run


def held_out_photos(label: str, n: int = 2) -> list[Path]:
    """Example photos of ``label`` that the tiny run did not train on."""
    from helpers import example_photos

    return example_photos(label, PER_CLASS + n)[PER_CLASS:]
