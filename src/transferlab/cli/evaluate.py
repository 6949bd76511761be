"""`transferlab evaluate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from transferlab.cli._common import Debug, Quiet, app, guard, out, print_metrics, setup_logging

EVALUATE_EXAMPLES = """
[bold]Examples[/bold]

  transferlab evaluate runs/demo --data examples/ahe-mini
  transferlab evaluate runs/demo/model --data new_photos/ --split all --out runs/demo/eval-new
"""


@app.command(epilog=EVALUATE_EXAMPLES)
def evaluate(
    model: Annotated[Path, typer.Argument(help="A run folder or a model bundle folder.")],
    data: Annotated[Path, typer.Option("--data", help="Labelled images in any supported layout.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write metrics.json here.")] = None,
    split: Annotated[
        str,
        typer.Option(
            help="auto | test | val | all. auto: the run's held-out split if DATA is its data, "
            "else test/ or val/, else everything."
        ),
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Measure a trained model on labelled images: accuracy, per-class P/R/F1 with 95% CIs."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab.errors import ConfigError
        from transferlab.evaluate import evaluate_model

        if split not in ("auto", "test", "val", "all"):
            raise ConfigError(f"--split '{split}' is not one of: auto, test, val, all")
        metrics = evaluate_model(model, data, split, out_dir)
        if as_json:
            out.print_json(json.dumps(metrics))
        else:
            print_metrics(metrics, metrics["evaluated"], quiet)
