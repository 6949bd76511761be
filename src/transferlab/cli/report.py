"""`transferlab report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from transferlab.cli._common import Debug, Quiet, app, guard, setup_logging

REPORT_EXAMPLES = """
[bold]Examples[/bold]

  transferlab report runs/demo
  transferlab report runs/demo --window 50 --top-k 24
  transferlab report runs/backbones
  transferlab report runs/backbones --baseline examples/baselines/ahe-paper-resnet.yaml
  transferlab report runs/backbones --baseline-run tf_efficientnet_lite0 --no-speed

A run folder gets RUN/report.html plus RUN/report/ (every figure as PNG, numbers in
report.json); an experiment folder gets every run's report and leaderboard.md/.csv/.html.
"""


@app.command(epilog=REPORT_EXAMPLES)
def report(
    path: Annotated[
        Path, typer.Argument(help="A finished run folder, or an experiment folder of runs.")
    ],
    window: Annotated[
        int, typer.Option(help="Batches in the rolling mean/std of the batch-loss curve.")
    ] = 20,
    top_k: Annotated[int, typer.Option(help="Images in the top-losses gallery.")] = 12,
    bins: Annotated[int, typer.Option(help="Confidence bins of the calibration plot.")] = 15,
    baseline: Annotated[
        Path | None, typer.Option(help="Experiments: YAML/CSV of per-class F1 to compare with.")
    ] = None,
    baseline_run: Annotated[
        str | None, typer.Option(help="Experiments: use this run as the baseline.")
    ] = None,
    speed: Annotated[
        bool,
        typer.Option(help="Experiments: time inference of runs that have no inference.json."),
    ] = True,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """(Re)build HTML reports from finished runs, without training."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab.compare import report_experiment
        from transferlab.errors import ConfigError
        from transferlab.report import write_run_report

        # Checked before any run is timed or drawn (report_experiment times runs first).
        for option, value, least in (
            ("--window", window, 1),
            ("--top-k", top_k, 0),
            ("--bins", bins, 1),
        ):
            if value < least:
                raise ConfigError(f"{option} {value} is out of range; it must be >= {least}")
        options = {"window": window, "top_k": top_k, "bins": bins}
        # The library logs what it writes ("report written to ...", "leaderboard written
        # to ..."); the command adds no second line.
        if (path / "metrics.json").is_file():
            if baseline is not None or baseline_run is not None:
                raise ConfigError("--baseline and --baseline-run are for experiment folders")
            write_run_report(path, **options)
        else:
            report_experiment(path, baseline, baseline_run, speed, **options)
