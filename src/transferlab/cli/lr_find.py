"""`transferlab lr-find`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from transferlab.cli._common import (
    ConfigFile,
    ConfigOption,
    Debug,
    Quiet,
    Sets,
    app,
    guard,
    out,
    run_config,
    setup_logging,
)

LR_FIND_EXAMPLES = """
[bold]Examples[/bold]

  transferlab lr-find examples/ahe-mini --out runs/lr-find
  transferlab lr-find photos/ --model convnet2 --weights none --image-size 64 --steps 60
  transferlab lr-find photos/ --model tv/resnet18 --start-lr 1e-6 --end-lr 1 --batch-size 16
  transferlab lr-find photos/ --config runs/demo/config.yaml --optimizer sgd
  transferlab lr-find photos/ --set train.weight_decay=0.05 --set augment.preset=strong

Precedence: defaults < --config YAML < --set < options such as --optimizer.

The suggestion is the LR of the steepest fall of the smoothed loss before its minimum,
at most a tenth of the LR at the minimum: never the point where training diverged.
"""


@app.command("lr-find", epilog=LR_FIND_EXAMPLES)
def lr_find(
    context: typer.Context,
    data: Annotated[
        Path,
        typer.Argument(help="Class folders, train/ + val/ (+ test/) folders, or a path,label CSV."),
    ],
    model: Annotated[
        str | None, ConfigOption("model.name", help="Model name (default tf_efficientnet_lite0).")
    ] = None,
    weights: Annotated[
        str | None,
        ConfigOption("model.weights", help="imagenet | none | PATH to weights or a bundle."),
    ] = None,
    image_size: Annotated[
        int | None,
        ConfigOption("model.image_size", help="Input size in pixels (default: the model's)."),
    ] = None,
    batch_size: Annotated[
        int | None, ConfigOption("train.batch_size", help="Images per batch.")
    ] = None,
    optimizer: Annotated[
        str | None,
        ConfigOption("train.optimizer", help="adamw | adam | sgd | rmsprop (default adamw)."),
    ] = None,
    config: ConfigFile = None,
    sets: Sets = None,
    start_lr: Annotated[float, typer.Option(help="First learning rate tried.")] = 1e-7,
    end_lr: Annotated[float, typer.Option(help="Last learning rate tried.")] = 10.0,
    steps: Annotated[int, typer.Option(help="Mini-batches (LR steps) at most.")] = 100,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for lr_find.csv and lr_find.png.")
    ] = Path("lr-find"),
    seed: Annotated[
        int | None, ConfigOption("train.seed", help="Seed for split, init and batches.")
    ] = None,
    device: Annotated[
        str | None, ConfigOption("train.device", help="auto | cpu | cuda | cuda:N")
    ] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """LR range test: raise the LR exponentially over mini-batches, plot the loss, suggest an LR."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab.api import lr_find_config
        from transferlab.lr_find import check_range

        check_range(start_lr, end_lr, steps)
        cfg = run_config(lr_find, context.params, config, sets, {"data.path": str(data)})
        found = lr_find_config(cfg, out_dir, start_lr, end_lr, steps)
        ctx = found.context
        s = found.result.suggestion
        diverged = f"{s.diverged_lr:.2e}" if s.diverged_lr is not None else "not reached"
        if not quiet:
            out.print(
                f"{len(found.result.lrs)} {ctx['optimizer']} steps on {ctx['train_images']} "
                f"training images; loss minimum at lr {s.min_loss_lr:.2e}, diverged at {diverged}",
                highlight=False,
                soft_wrap=True,
            )
            out.print(f"rule: {s.reason}", highlight=False, soft_wrap=True)
            paths = f"curve: {found.csv_path}, plot: {found.plot_path}"
            out.print(paths, highlight=False, soft_wrap=True)
        out.print(f"suggested lr: {s.lr:.2e}", highlight=False)
