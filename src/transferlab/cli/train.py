"""`transferlab train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from transferlab.cli._common import Debug, Quiet, app, err, guard, out, print_metrics, setup_logging

TRAIN_EXAMPLES = """
[bold]Examples[/bold]

  transferlab train examples/ahe-mini --out runs/demo
  transferlab train photos/ --out runs/b --epochs 6 --image-size 160 --seed 1
  transferlab train labels.csv --out runs/c --model tf_efficientnet_lite2
  transferlab train photos/ --out runs/d --split-file runs/demo/split.csv
  transferlab train photos/ --out runs/e --config runs/demo/config.yaml --lr 5e-4
"""


@app.command(epilog=TRAIN_EXAMPLES)
def train(
    data: Annotated[
        Path, typer.Argument(help="Class folders, train/val[/test] folders, or a path,label CSV.")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder to create.")],
    model: Annotated[
        str | None, typer.Option(help="timm model name (default tf_efficientnet_lite0).")
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="imagenet | none | PATH to weights or a bundle.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Fine-tuning epochs after the head warm-up.")
    ] = None,
    warmup_epochs: Annotated[
        int | None, typer.Option(help="Head-only epochs first (cheap: cached features).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per batch.")] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Input size in pixels (default: the model's).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Head learning rate; backbone gets lr x backbone_lr_mult.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for split, init, order and augmentation.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML config (e.g. a run's config.yaml); options override it."),
    ] = None,
    val_fraction: Annotated[
        float | None, typer.Option(help="Share of each class for validation.")
    ] = None,
    test_fraction: Annotated[
        float | None, typer.Option(help="Share of each class for the test split.")
    ] = None,
    split_file: Annotated[
        Path | None, typer.Option(help="Reuse a run's split.csv (same images, same splits).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Fine-tune a classifier on DATA and write a run folder: model, metrics, history, split."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab.config import from_dict, load_yaml
        from transferlab.engine import Callback
        from transferlab.pipeline import train_run
        from transferlab.progress import EpochLogger, ProgressBar

        raw: dict[str, Any] = load_yaml(config) if config else {}
        overrides = {
            "data.path": str(data),
            "data.val_fraction": val_fraction,
            "data.test_fraction": test_fraction,
            "data.split_file": str(split_file) if split_file else None,
            "model.name": model,
            "model.weights": weights,
            "model.image_size": image_size,
            "train.epochs": epochs,
            "train.warmup_epochs": warmup_epochs,
            "train.batch_size": batch_size,
            "train.lr": lr,
            "train.seed": seed,
            "train.device": device,
        }
        cfg = from_dict(raw, overrides)
        callbacks: list[Callback] = [EpochLogger()]
        if err.is_terminal and not quiet:
            callbacks.append(ProgressBar(err))
        result = train_run(cfg, out_dir, callbacks)
        print_metrics(result.metrics, f"{result.metrics['split']} split", quiet)
        if not quiet:
            out.print(f"run saved to [bold]{out_dir}[/bold]; model bundle in {out_dir / 'model'}")
