"""transferlab: a folder of labelled images in, a trusted classifier out.

Examples:
    >>> import transferlab as tl
    >>> run = tl.train("examples/ahe-mini", image_size=64, epochs=1)  # doctest: +SKIP
    >>> run.model.predict("examples/samples/capitol-dome.jpg")  # doctest: +SKIP

The Python API (:mod:`transferlab.api`) is loaded on first use, the lazy loading of
Scientific Python's SPEC 1 (types in ``__init__.pyi``): ``import transferlab`` stays quick,
and the modules that read ``transferlab.__version__`` do not pull in the training pipeline
through this package.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from transferlab.errors import (
    BundleError,
    ConfigError,
    DatasetError,
    ModelError,
    TransferlabError,
    WeightsError,
)

__version__ = "0.1.0"

_API = (
    "Audit",
    "CropResult",
    "Evaluation",
    "ImageLike",
    "LRFind",
    "Leaderboard",
    "Model",
    "Predictions",
    "Run",
    "audit",
    "build_config",
    "compare",
    "crop_images",
    "load",
    "lr_find",
    "models",
    "resume",
    "train",
)

__all__ = [
    "BundleError",
    "ConfigError",
    "DatasetError",
    "ModelError",
    "TransferlabError",
    "WeightsError",
    "__version__",
    *_API,
]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("transferlab.api"), name)
    raise AttributeError(f"module 'transferlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})


# The functions audit, compare, models and lr_find share their names with submodules
# (transferlab.audit, transferlab.compare, transferlab.models, transferlab.lr_find).
# Importing a submodule sets it as an attribute of this package, which would hide the
# function: the package refuses it (``from transferlab.compare import ...`` still finds the
# module in sys.modules).
_SHADOWED = frozenset({"audit", "compare", "models", "lr_find"})


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
