"""Shared CLI plumbing: the Typer app, consoles, logging set-up and error mapping.

Known errors (:class:`TransferlabError`) print ``error: <what and what to do>`` and exit
with code 2; anything unexpected exits 1 with a hint; ``--debug`` shows tracebacks.

Options that set a config key are :class:`ConfigOption`s: each names its dotted key once, and
:func:`run_config` turns the given ones into overrides, after ``--config`` and ``--set``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args, get_type_hints

import typer
from rich.console import Console
from rich.markup import escape
from typer.models import OptionInfo

from transferlab.errors import ConfigError, TransferlabError

if TYPE_CHECKING:
    from transferlab.config import RunConfig

app = typer.Typer(
    name="transferlab",
    help="Fine-tune a pretrained image classifier on a folder of labelled images, measure it "
    "honestly, and use it.",
    epilog="Exit codes: 0 done; 2 a problem with the input, said in one line with what to do; "
    "1 an unexpected crash (--debug shows the traceback); 3 predict/crop finished but some "
    "files could not be read. Each command's --help has examples.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)
# Distinct from 1 (a crash) and 2 (bad input): a batch (predict, crop) that was partly done.
EXIT_UNREADABLE = 3
out = Console()
err = Console(stderr=True)
logger = logging.getLogger("transferlab")

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")]
Debug = Annotated[bool, typer.Option("--debug", help="Verbose logs and full tracebacks.")]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Set any config key, e.g. --set train.label_smoothing=0.05 (repeatable). "
        "Precedence: defaults < --config YAML < --set < options.",
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(help="YAML config (e.g. a run's config.yaml); --set and options override it."),
]


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return msg if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {msg}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is written, as the standard
    library's own last-resort handler does. A handler bound to the stream of the moment
    outlives it: after a command run inside a notebook or a test runner that swapped
    ``sys.stderr`` (and closed it), every later log line of the process failed with
    "--- Logging error ---"."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ sets it; ignored
        pass


def setup_logging(quiet: bool, debug: bool) -> None:
    handler = _StderrHandler()
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


class ConfigOption(OptionInfo):
    """A CLI option that sets the config key ``config_key``; its help names the key.

    ``renamed_to``: the option is an old name (hidden), kept working with a warning.
    """

    def __init__(
        self, config_key: str, *param_decls: str, help: str, renamed_to: str | None = None
    ) -> None:
        super().__init__(
            default=...,  # Annotated options take their default from the parameter
            param_decls=param_decls or None,
            help=f"{help} ({config_key})",
            hidden=renamed_to is not None,
        )
        self.config_key = config_key
        self.renamed_to = renamed_to


def config_options(command: Callable[..., Any]) -> dict[str, tuple[str, ConfigOption]]:
    """``{parameter name: (flag, option)}`` for the options of ``command`` that set keys."""
    found: dict[str, tuple[str, ConfigOption]] = {}
    for name, hint in get_type_hints(command, include_extras=True).items():
        for option in get_args(hint)[1:]:
            if isinstance(option, ConfigOption):
                flag = next(iter(option.param_decls or ()), "--" + name.replace("_", "-"))
                found[name] = (flag.split("/")[0], option)
    return found


def flag_overrides(command: Callable[..., Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted config keys of the options given (``given``: parameter name -> value)."""
    overrides: dict[str, Any] = {}
    renamed: list[tuple[str, Any]] = []
    for name, (flag, option) in config_options(command).items():
        value = given.get(name)
        if value is None:
            continue
        value = str(value) if isinstance(value, Path) else value
        if option.renamed_to:
            logger.warning("%s is now %s; please use that", flag, option.renamed_to)
            renamed.append((option.config_key, value))
        else:
            overrides[option.config_key] = value
    for key, value in renamed:  # the current name wins where both are given
        overrides.setdefault(key, value)
    return overrides


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``--set section.key=value`` items as ``{key: "value"}``; config coerces the text."""
    sets: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(
                f"--set takes section.key=value (e.g. --set train.lr=3e-4); got {item!r}"
            )
        sets[key.strip()] = value.strip()
    return sets


def run_config(
    command: Callable[..., Any],
    given: Mapping[str, Any],
    config: Path | None,
    sets: list[str] | None,
    extra: Mapping[str, Any] | None = None,
) -> RunConfig:
    """The config: defaults < ``--config`` YAML < ``--set`` < options (``given``, ``extra``).

    A bad value is reported with the option that sets its key, where there is one.
    """
    from transferlab.config import BadValue, from_dict, load_yaml

    raw = load_yaml(config) if config else {}
    overrides = {**parse_sets(sets), **flag_overrides(command, given), **(extra or {})}
    try:
        return from_dict(raw, overrides)
    except BadValue as exc:
        options = config_options(command).values()
        flag = {o.config_key: f for f, o in options if not o.renamed_to}.get(exc.key)
        if flag is None or not str(exc).startswith(exc.key):
            raise
        raise ConfigError(f"{flag} ({exc.key}){str(exc)[len(exc.key) :]}") from None
