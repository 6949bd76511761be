"""Errors a user can act on. The CLI turns each into one line and an exit code."""

from __future__ import annotations


class TransferlabError(Exception):
    """Base class: the message says what happened and what to do."""

    exit_code = 2


class ConfigError(TransferlabError):
    """A bad option, config key or value."""


class DatasetError(TransferlabError):
    """The data folder, CSV or split cannot be used as given."""


class ModelError(TransferlabError):
    """An unknown architecture or one that cannot be built."""


class WeightsError(ModelError):
    """Pretrained weights that cannot be found or loaded."""


class BundleError(TransferlabError):
    """A model bundle or checkpoint that is missing or damaged."""


class RunsFailed(TransferlabError):
    """Runs of an experiment failed while the others finished (they are in the leaderboard).

    The exit code is 2 if every failure was an error the user can fix, 1 if one crashed.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
