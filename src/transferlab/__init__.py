"""transferlab: a folder of labelled images in, a trusted classifier out."""

from transferlab.errors import (
    BundleError,
    ConfigError,
    DatasetError,
    ModelError,
    TransferlabError,
    WeightsError,
)

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "ConfigError",
    "DatasetError",
    "ModelError",
    "TransferlabError",
    "WeightsError",
    "__version__",
]
