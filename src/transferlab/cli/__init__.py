"""The ``transferlab`` command line: one module per command, errors as one line.

Known errors (:class:`~transferlab.errors.TransferlabError`) print ``error: <what and what
to do>`` and exit 2; anything unexpected exits 1 with a hint; ``--debug`` shows tracebacks.
Nothing in the library imports this package.
"""

import transferlab.cli.audit  # registers audit
import transferlab.cli.lr_find  # noqa: F401  (registers lr-find)
from transferlab.cli import (  # noqa: F401  (registers commands)
    compare,
    crop,
    evaluate,
    export,
    models,
    predict,
    reject_below,
    report,
    serve,
    stream,
    train,
)
from transferlab.cli._common import app


def main() -> None:
    app()


__all__ = ["app", "main"]
