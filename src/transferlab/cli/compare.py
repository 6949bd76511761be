"""`transferlab compare`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from transferlab.cli._common import Debug, Quiet, app, err, guard, out, setup_logging

if TYPE_CHECKING:
    from transferlab.engine import Callback

COMPARE_EXAMPLES = """
[bold]Examples[/bold]

  transferlab compare examples/experiments/ahe-backbones.yaml --out runs/backbones
  transferlab compare exp.yaml --out runs/exp --repeats 3
  transferlab compare exp.yaml --out runs/exp --baseline examples/baselines/ahe-paper-resnet.yaml
  transferlab compare exp.yaml --out runs/exp --baseline-run tf_efficientnet_lite0
  transferlab compare exp.yaml --out runs/exp --data /data/ahe/train --logger mlflow
  transferlab compare exp.yaml --out runs/exp --dry-run
  transferlab compare exp.yaml --out runs/exp --fail-fast
  transferlab compare exp.yaml --out runs/exp --parallel 2          # two runs at once
  transferlab compare exp.yaml --out runs/exp --time-budget 30m     # all runs in 30 minutes
  transferlab compare exp.yaml --out runs/exp --parallel 4 --time-budget 1h30m

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

--parallel N trains N runs at once, each in its own process: one GPU per run, or on a
CPU an equal share of the cores per run (N at most the GPUs or cores). The first run
starts alone until it has written the split every run shares. --fail-fast then stops
the running runs (their last checkpoints stay) and starts no more. Run reports and the
leaderboard are written at the end, as in a serial compare.

--time-budget splits one wall-clock budget across the runs still to do: each run gets
its share as train.time_budget (in its config.yaml) when it starts, and time a run does
not use goes to the runs after it; with --parallel N, N runs share the clock. The
leaderboard's train time shows each run's budget beside its actual time.
"""


@dataclass(frozen=True)
class RunCallbacks:
    """Each run's terminal display: epoch lines and, with ``bar``, a progress bar (the
    --logger trackers come after them, from :func:`transferlab.api.compare`). A picklable
    recipe rather than a closure: with --parallel it travels to the worker process that
    trains the run."""

    bar: bool = False

    def __call__(self, run_dir: Path) -> list[Callback]:
        from transferlab.progress import EpochLogger, ProgressBar

        cbs: list[Callback] = [EpochLogger()]
        if self.bar:
            cbs.append(ProgressBar(err))
        return cbs


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
    parallel: Annotated[
        int,
        typer.Option(
            "--parallel",
            help="Runs at once, each in its own process: one per GPU, or on CPU a share of "
            "the cores each.",
        ),
    ] = 1,
    time_budget: Annotated[
        str | None,
        typer.Option(
            "--time-budget",
            metavar="DURATION",
            help="Wall-clock budget for all runs still to do (90s, 15m, 1h30m), shared out "
            "as each run's train.time_budget.",
        ),
    ] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Train every configuration of an experiment on one split and write a leaderboard."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab import api
        from transferlab.budget import parse_duration
        from transferlab.compare import check_budget, plan_runs, worker_slots
        from transferlab.errors import RunsFailed

        seconds = None if time_budget is None else parse_duration(time_budget, "--time-budget")
        exp = api.plan_experiment(experiment, out_dir, repeats, baseline, baseline_run, data)
        runs = plan_runs(exp)
        worker_slots(runs, parallel)
        check_budget(runs, seconds)
        if dry_run:
            for run in runs:
                state = "finished" if (out_dir / run.name / "metrics.json").is_file() else "to run"
                out.print(f"{run.name}\tseed {run.seed}\t{state}", highlight=False)
            for cell in exp.invalid:
                line = f"{cell.name}\t-\twill fail: {cell.error}"
                out.print(line, highlight=False, markup=False, soft_wrap=True)
            err.print(f"{len(runs)} runs; nothing trained (--dry-run)")
            return

        bar = err.is_terminal and not quiet and parallel == 1  # N bars would interleave
        board = api.compare(
            exp,
            out_dir,
            loggers=logger or [],
            fail_fast=fail_fast,
            progress=False,
            callbacks=RunCallbacks(bar),
            parallel=parallel,
            time_budget=seconds,
        )
        result = board.outcome
        assert result is not None  # api.compare always sets it
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
