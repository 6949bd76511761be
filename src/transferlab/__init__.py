"""transferlab: a folder of labelled images in, a trusted classifier out.

Examples:
    >>> import transferlab as tl
    >>> run = tl.train("examples/ahe-mini", image_size=64, epochs=1)  # doctest: +SKIP
    >>> run.model.predict("examples/samples/capitol-dome.jpg")  # doctest: +SKIP
"""

__version__ = "0.1.0"  # before the imports below: modules they load read it

import sys as _sys
import types as _types

from transferlab.api import (
    Evaluation,
    ImageLike,
    Leaderboard,
    LRFind,
    Model,
    Predictions,
    Run,
    build_config,
    compare,
    load,
    lr_find,
    models,
    resume,
    train,
)
from transferlab.errors import (
    BundleError,
    ConfigError,
    DatasetError,
    ModelError,
    TransferlabError,
    WeightsError,
)

__all__ = [
    "BundleError",
    "ConfigError",
    "DatasetError",
    "Evaluation",
    "ImageLike",
    "LRFind",
    "Leaderboard",
    "Model",
    "ModelError",
    "Predictions",
    "Run",
    "TransferlabError",
    "WeightsError",
    "__version__",
    "build_config",
    "compare",
    "load",
    "lr_find",
    "models",
    "resume",
    "train",
]

# The functions compare, models and lr_find share their names with submodules
# (transferlab.compare, transferlab.models, transferlab.lr_find). Importing a submodule sets
# it as an attribute of this package, which would replace the function: the package keeps
# the function instead (``from transferlab.compare import ...`` still finds the module).
_SHADOWED = frozenset({"compare", "models", "lr_find"})


class _Package(_types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        if name in _SHADOWED and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
