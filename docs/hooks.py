"""MkDocs hooks: the CLI reference generated from the Typer app, and the design notes.

``cli.md`` holds the marker ``<!-- cli-reference -->``; it is replaced by every command's
usage, help and options, read from the click command Typer builds (so the page cannot drift
from ``--help``). Written here: mkdocs-click is not among the dependencies, and walking
click's commands takes a few lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer.main

MARKER = "<!-- cli-reference -->"


def _option_row(param: Any, ctx: Any) -> str:
    record = param.get_help_record(ctx)
    if record is None:
        return ""
    names, text = record
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"| `{names}` | {text} |"


def _command_markdown(name: str, command: Any, parent: Any) -> str:
    # Typer builds its commands on its own copy of click: duck-typed here, no click import.
    ctx = command.make_context(name, [], parent=parent, resilient_parsing=True)
    usage = " ".join(command.collect_usage_pieces(ctx))
    helptext = (command.help or "").strip()
    rows = [_option_row(p, ctx) for p in command.get_params(ctx) if not getattr(p, "hidden", 0)]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    parts = [f"## `transferlab {name}`", "", helptext, "", "```"]
    parts += [f"transferlab {name} {usage}", "```"]
    if arguments:
        parts += ["", "| argument | what it is |", "| --- | --- |"]
        parts += [f"| `{str(a.name).upper()}` | {getattr(a, 'help', '')} |" for a in arguments]
    table = [r for r in rows if r]
    if table:
        parts += ["", "| option | what it does |", "| --- | --- |", *table]
    return "\n".join(parts)


def cli_reference() -> str:
    from transferlab.cli import app

    group: Any = typer.main.get_command(app)
    root = group.make_context("transferlab", [], resilient_parsing=True)
    return "\n\n".join(
        _command_markdown(name, group.commands[name], root) for name in sorted(group.commands)
    )


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown


def on_config(config: Any) -> Any:
    """Link the design notes (written separately) once ``docs/design.md`` exists."""
    design = Path(config["docs_dir"]) / "design.md"
    if design.is_file() and config["nav"] is not None:
        config["nav"].append({"Design": "design.md"})
    return config
