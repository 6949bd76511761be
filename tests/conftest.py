"""Shared fixtures: tiny datasets built in ``tmp_path`` (see ``helpers.py``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import CLASSES, copy_photos


@pytest.fixture(scope="session", autouse=True)
def image_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Disk stores of decoded images go to a temporary folder, never ``~/.cache`` (set in
    the environment, so CLI subprocesses and worker processes use it too)."""
    folder = tmp_path_factory.mktemp("image-cache")
    before = os.environ.get("TRANSFERLAB_IMAGE_CACHE")
    os.environ["TRANSFERLAB_IMAGE_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("TRANSFERLAB_IMAGE_CACHE", None)
    else:
        os.environ["TRANSFERLAB_IMAGE_CACHE"] = before


@pytest.fixture
def class_folders(tmp_path: Path) -> Callable[..., Path]:
    """Build ``root/<class>/*.jpg`` from example photos: ``class_folders(per_class=8)``."""

    def build(
        per_class: int = 8, classes: tuple[str, ...] = CLASSES, root: Path | None = None
    ) -> Path:
        root = root or tmp_path / "data"
        for label in classes:
            copy_photos(label, root / label, per_class)
        return root

    return build


@pytest.fixture(scope="session")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained run folder (tests/trained_model.py), trained once per test session."""
    from trained_model import trained_run

    return trained_run(tmp_path_factory)


@pytest.fixture
def restore_transferlab_logging() -> Iterator[None]:
    """The CLI reconfigures the ``transferlab`` logger; put it back for the next test."""
    log = logging.getLogger("transferlab")
    saved = (log.handlers[:], log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved
