"""`transferlab models`."""

from __future__ import annotations

from typing import Annotated

import typer

from transferlab.cli._common import Debug, Quiet, app, err, guard, out, setup_logging

MODELS_EXAMPLES = """
[bold]Examples[/bold]

  transferlab models --offline
  transferlab models --filter 'resnet*'
"""


@app.command(epilog=MODELS_EXAMPLES)
def models(
    offline: Annotated[
        bool, typer.Option("--offline", help="Only models whose weights need no network.")
    ] = False,
    pattern: Annotated[str, typer.Option("--filter", help="Shell-style name pattern.")] = "*",
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """List backbone names; 'offline' marks ImageNet weights installed with transferlab."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab.api import models as list_models

        rows = list_models(offline=offline, pattern=pattern)
        for row in rows:
            weights = (
                "imagenet (offline)"
                if row.offline
                else "imagenet (hub)"
                if row.pretrained
                else "none"
            )
            out.print(f"{row.name}\t{weights}", highlight=False)
        if not quiet:
            err.print(
                f"{len(rows)} models; use --weights none for any of them to train from scratch"
            )
