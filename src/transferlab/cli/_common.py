"""Shared CLI plumbing: the Typer app, consoles, logging set-up and error mapping.

Known errors (:class:`TransferlabError`) print ``error: <what and what to do>`` and exit
with code 2; anything unexpected exits 1 with a hint; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from transferlab.errors import TransferlabError

app = typer.Typer(
    name="transferlab",
    help="Fine-tune a pretrained image classifier on a folder of labelled images, measure it "
    "honestly, and use it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)
out = Console()
err = Console(stderr=True)
logger = logging.getLogger("transferlab")

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")]
Debug = Annotated[bool, typer.Option("--debug", help="Verbose logs and full tracebacks.")]


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return msg if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {msg}"


def setup_logging(quiet: bool, debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    root = logging.getLogger("transferlab")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    root.propagate = False


@contextlib.contextmanager
def guard(debug: bool) -> Iterator[None]:
    """Map exceptions to one-line messages and exit codes."""
    try:
        yield
    except TransferlabError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if debug:
            raise
        err.print(
            f"[red]error:[/red] unexpected {exc.__class__.__name__}: {escape(str(exc))} "
            "(rerun with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


def print_metrics(metrics: dict[str, object], where: str, quiet: bool) -> None:
    from transferlab.report.table import per_class_table

    skipped = metrics.get("skipped_files", 0)
    title = f"per-class results on {where}" + (
        f" ({skipped} unreadable files skipped)" if skipped else ""
    )
    if not quiet:
        out.print(per_class_table(metrics, title=title))
    else:
        out.print(f"accuracy {metrics['accuracy']:.4f}  macro_f1 {metrics['macro_f1']:.4f}")
