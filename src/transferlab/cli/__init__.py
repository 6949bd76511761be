"""The ``transferlab`` command line: one module per command, errors as one line.

Known errors (:class:`~transferlab.errors.TransferlabError`) print ``error: <what and what
to do>`` and exit 2; anything unexpected exits 1 with a hint; ``--debug`` shows tracebacks.
Nothing in the library imports this package.
"""

from transferlab.cli import serve, stream  # noqa: F401  (registers commands)
    evaluate,
    export,
    models,
    predict,
    train,
)
from transferlab.cli._common import app


def main() -> None:
    app()


__all__ = ["app", "main"]
