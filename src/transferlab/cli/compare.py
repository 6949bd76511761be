"""`transferlab compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from transferlab.cli._common import Debug, Quiet, app, err, guard, out, setup_logging

COMPARE_EXAMPLES = """
[bold]Examples[/bold]

  transferlab compare examples/experiments/ahe-backbones.yaml --out runs/backbones
  transferlab compare exp.yaml --out runs/exp --repeats 3
  transferlab compare exp.yaml --out runs/exp --baseline examples/baselines/ahe-paper-resnet.yaml
  transferlab compare exp.yaml --out runs/exp --baseline-run tf_efficientnet_lite0
  transferlab compare exp.yaml --out runs/exp --data /data/ahe/train --logger mlflow
  transferlab compare exp.yaml --out runs/exp --dry-run
  transferlab compare exp.yaml --out runs/exp --fail-fast

[bold]Experiment file[/bold]

  dataset: ../ahe-mini            # relative to this file
  base:                           # sections of a run's config.yaml
    model: {image_size: 96}
    train: {epochs: 2, head_epochs: 2}
  axes:                           # every combination of these dotted config keys
    model.name: \\[tf_efficientnet_lite0, tf_efficientnet_lite1]
    train.lr: [0.001, 0.0003]
  runs:                           # optional explicit runs, crossed with the axes
    - {name: scratch, train.strategy: scratch}
  baseline: ../baselines/ahe-paper-resnet.yaml   # optional per-class F1 to beat

Re-running the same command skips finished runs and resumes interrupted ones. A run that
fails is marked FAILED in the leaderboard while the others go on (--fail-fast stops);
the exit code is then 2 (1 if a run crashed).
"""


@app.command(epilog=COMPARE_EXAMPLES)
def compare(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML: dataset, base, axes/runs.")],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Experiment folder: one run folder per run inside.")
    ],
    repeats: Annotated[
        int | None,
        typer.Option(help="Seeds per configuration (mean ± std); overrides the file's repeats."),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(help="YAML/CSV of per-class F1 to compare against (e.g. a paper's)."),
    ] = None,
    baseline_run: Annotated[
        str | None, typer.Option(help="Use this run of the experiment as the baseline instead.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset to use instead of the file's dataset.")
    ] = None,
    logger: Annotated[
        list[str] | None,
        typer.Option(
            "--logger", help="Also log to tensorboard or mlflow (repeatable); CSV is always on."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate the file and list the runs; train none.")
    ] = False,
    fail_fast: Annotated[
        bool,
        typer.Option(
            "--fail-fast", help="Stop at the first run that fails (default: record it, go on)."
        ),
    ] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Train every configuration of an experiment on one split and write a leaderboard."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab import api
        from transferlab.compare import plan_runs
        from transferlab.engine import Callback
        from transferlab.errors import RunsFailed
        from transferlab.progress import EpochLogger, ProgressBar

        exp = api.plan_experiment(experiment, out_dir, repeats, baseline, baseline_run, data)
        runs = plan_runs(exp)
        if dry_run:
            for run in runs:
                state = "finished" if (out_dir / run.name / "metrics.json").is_file() else "to run"
                out.print(f"{run.name}\tseed {run.seed}\t{state}", highlight=False)
            for cell in exp.invalid:
                line = f"{cell.name}\t-\twill fail: {cell.error}"
                out.print(line, highlight=False, markup=False, soft_wrap=True)
            err.print(f"{len(runs)} runs; nothing trained (--dry-run)")
            return

        def callbacks(run_dir: Path) -> list[Callback]:
            cbs: list[Callback] = [EpochLogger()]
            if err.is_terminal and not quiet:
                cbs.append(ProgressBar(err))
            return cbs

        board = api.compare(
            exp,
            out_dir,
            loggers=logger or [],
            fail_fast=fail_fast,
            progress=False,
            callbacks=callbacks,
        )
        result = board.outcome
        assert result is not None  # set by every compare call
        if result.leaderboard is not None and not quiet:
            text = result.leaderboard.read_text(encoding="utf-8")
            out.print(text, highlight=False, markup=False, soft_wrap=True)
        err.print(
            f"{len(result.trained)} trained ({len(result.resumed)} resumed), "
            f"{len(result.skipped)} already finished, {len(result.failed)} failed",
            highlight=False,
        )
        if result.failed:
            first = result.failed[0]
            failed = ", ".join(f.run for f in result.failed)
            raise RunsFailed(
                f"{len(result.failed)} of {len(result.runs) + len(exp.invalid)} runs failed "
                f"({failed}); {first.run}: {first.error}; fix it and run the same command "
                "again (finished runs are kept)",
                1 if any(f.exit_code != 2 for f in result.failed) else 2,
            )
