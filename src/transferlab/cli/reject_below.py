"""`transferlab reject-below`: the model's default threshold for answering "unknown"."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from transferlab.cli._common import Debug, Quiet, app, guard, out, setup_logging

REJECT_EXAMPLES = """
[bold]Examples[/bold]

  transferlab evaluate runs/demo --data examples/ahe-mini   # choose P from its last line
  transferlab reject-below runs/demo 0.6
  transferlab reject-below runs/demo none

predict, serve and stream then answer 'unknown' below P unless given --reject-below
(0 answers every image). An ONNX export carries the threshold the bundle had when it was
exported.
"""


def parse_threshold(text: str) -> float | None:
    """'none' -> None; else a probability in [0, 1], or a one-line ConfigError."""
    from transferlab.calibration import check_reject_below
    from transferlab.errors import ConfigError

    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(
            f"reject-below '{text}' is not a number; give a probability in [0, 1] or none"
        ) from None
    return check_reject_below(value, "reject-below")


@app.command("reject-below", epilog=REJECT_EXAMPLES)
def reject_below(
    model: Annotated[Path, typer.Argument(help="A run folder or its model/ bundle folder.")],
    threshold: Annotated[
        str,
        typer.Argument(
            metavar="P", help="Probability in [0, 1] below which the answer is 'unknown'; none."
        ),
    ],
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Set the model's default --reject-below, stored in its model.json."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab.bundle import set_reject_below

        value = parse_threshold(threshold)
        written = set_reject_below(model, value)
        if not quiet:
            said = "every image is answered" if value is None else f"'unknown' below {value:g}"
            out.print(f"{written}: {said}", highlight=False, soft_wrap=True)
