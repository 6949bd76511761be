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

[bold]Strategies[/bold]

  transferlab train photos/ --out runs/lp --strategy linear-probe --epochs 20
  transferlab train photos/ --out runs/lp2 --strategy linear-probe --feature-cache-dir ~/.cache/tl
  transferlab train photos/ --out runs/top2 --strategy top-n --trainable-groups 2
  transferlab train photos/ --out runs/full --strategy full --backbone-lr-mult 0.1 --bn frozen
  transferlab train photos/ --out runs/scratch --strategy scratch --model convnet2 --epochs 30
  transferlab train photos/ --out runs/mlp --head mlp --hidden-units 1024,512

[bold]Optimizers, schedules, augmentation, imbalance[/bold]

  transferlab train photos/ --out runs/sgd --optimizer sgd --lr 0.01 --scheduler multistep \\
      --milestones 10,20 --epochs 30
  transferlab train photos/ --out runs/aug --augment strong --class-weights auto
  transferlab train photos/ --out runs/bal --sampler balanced --early-stopping 3
  transferlab train photos/ --out runs/tb --logger tensorboard --logger mlflow

[bold]Resume and shared starting points[/bold]

  transferlab train --resume runs/demo
  transferlab train photos/ --out runs/adam --init-from runs/sgd-1epoch --optimizer adam
"""


def _ints(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    from transferlab.errors import ConfigError

    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated integers, e.g. 1024,512") from None


Opt = typer.Option


@app.command(epilog=TRAIN_EXAMPLES)
def train(
    data: Annotated[
        Path | None,
        typer.Argument(help="Class folders, train/ + val/ (+ test/) folders, or a path,label CSV."),
    ] = None,
    out_dir: Annotated[Path | None, Opt("--out", help="Run folder to create.")] = None,
    resume: Annotated[Path | None, Opt(help="Continue an interrupted run folder.")] = None,
    config: Annotated[
        Path | None, Opt(help="YAML config (e.g. a run's config.yaml); options override it.")
    ] = None,
    model: Annotated[str | None, Opt(help="timm or tv/ model name.")] = None,
    weights: Annotated[str | None, Opt(help="imagenet | none | PATH (weights/bundle).")] = None,
    strategy: Annotated[
        str | None, Opt(help="two-stage | linear-probe | top-n | full | scratch")
    ] = None,
    trainable_groups: Annotated[int | None, Opt(help="top-n: layer groups that train.")] = None,
    epochs: Annotated[int | None, Opt(help="Main epochs (two-stage: after the warm-up).")] = None,
    head_epochs: Annotated[int | None, Opt(help="two-stage: head-only epochs first.")] = None,
    batch_size: Annotated[int | None, Opt(help="Images per batch.")] = None,
    image_size: Annotated[int | None, Opt(help="Input size (default: the model's).")] = None,
    lr: Annotated[float | None, Opt(help="Head learning rate.")] = None,
    backbone_lr_mult: Annotated[float | None, Opt(help="Backbone LR = lr x this.")] = None,
    weight_decay: Annotated[float | None, Opt(help="Weight decay (not on biases/norms).")] = None,
    optimizer: Annotated[str | None, Opt(help="adamw | adam | sgd | rmsprop")] = None,
    momentum: Annotated[float | None, Opt(help="sgd / rmsprop momentum.")] = None,
    nesterov: Annotated[bool | None, Opt("--nesterov/--no-nesterov", help="sgd.")] = None,
    scheduler: Annotated[
        str | None, Opt(help="cosine | none | step | multistep | onecycle | plateau")
    ] = None,
    milestones: Annotated[str | None, Opt(help="multistep: epochs, e.g. 10,20.")] = None,
    gamma: Annotated[float | None, Opt(help="step/multistep/plateau decay factor.")] = None,
    bn: Annotated[str | None, Opt(help="train | frozen (BatchNorm in inference mode).")] = None,
    head: Annotated[str | None, Opt(help="linear | mlp")] = None,
    hidden_units: Annotated[str | None, Opt(help="mlp head widths, e.g. 1024,512.")] = None,
    augment: Annotated[str | None, Opt(help="none | light | strong")] = None,
    label_smoothing: Annotated[float | None, Opt(help="Label smoothing (0 to turn off).")] = None,
    class_weights: Annotated[str | None, Opt(help="none | auto (inverse frequency).")] = None,
    sampler: Annotated[str | None, Opt(help="random | balanced")] = None,
    early_stopping: Annotated[int | None, Opt(help="Patience in epochs, per phase.")] = None,
    monitor: Annotated[
        str | None, Opt(help="val_macro_f1 | val_accuracy | val_loss (best checkpoint).")
    ] = None,
    init_from: Annotated[str | None, Opt(help="Start from a bundle, run or checkpoint.")] = None,
    feature_cache_dir: Annotated[
        Path | None, Opt(help="Keep frozen-backbone features here for later runs.")
    ] = None,
    seed: Annotated[int | None, Opt(help="Seed for split, init, order and augmentation.")] = None,
    val_fraction: Annotated[float | None, Opt(help="Share of each class for validation.")] = None,
    test_fraction: Annotated[float | None, Opt(help="Share of each class for test.")] = None,
    split_file: Annotated[Path | None, Opt(help="Reuse a run's split.csv.")] = None,
    precision: Annotated[str | None, Opt(help="fp32 | bf16 (autocast).")] = None,
    logger: Annotated[
        list[str] | None, Opt("--logger", help="tensorboard | mlflow | csv (repeatable).")
    ] = None,
    device: Annotated[str | None, Opt(help="auto | cpu | cuda | cuda:N")] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Fine-tune a classifier on DATA and write a run folder: model, metrics, history, split."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab.config import from_dict, load_yaml
        from transferlab.engine import Callback
        from transferlab.errors import ConfigError
        from transferlab.pipeline import resume_run, train_run
        from transferlab.progress import EpochLogger, ProgressBar
        from transferlab.trackers import finish_run, make_loggers

        callbacks: list[Callback] = [EpochLogger()]
        if err.is_terminal and not quiet:
            callbacks.append(ProgressBar(err))
        if resume is not None:
            callbacks += make_loggers(logger or [], resume)
            result = resume_run(resume, callbacks)
            out_dir = resume
        else:
            if data is None or out_dir is None:
                raise ConfigError("give DATA and --out RUN (or --resume RUN to continue a run)")
            callbacks += make_loggers(logger or [], out_dir)
            raw: dict[str, Any] = load_yaml(config) if config else {}
            overrides = {
                "data.path": str(data),
                "data.val_fraction": val_fraction,
                "data.test_fraction": test_fraction,
                "data.split_file": str(split_file) if split_file else None,
                "model.name": model,
                "model.weights": weights,
                "model.image_size": image_size,
                "model.head": head,
                "model.hidden_units": _ints(hidden_units, "--hidden-units"),
                "train.strategy": strategy,
                "train.trainable_groups": trainable_groups,
                "train.epochs": epochs,
                "train.head_epochs": head_epochs,
                "train.batch_size": batch_size,
                "train.lr": lr,
                "train.backbone_lr_mult": backbone_lr_mult,
                "train.weight_decay": weight_decay,
                "train.optimizer": optimizer,
                "train.momentum": momentum,
                "train.nesterov": nesterov,
                "train.scheduler": scheduler,
                "train.milestones": _ints(milestones, "--milestones"),
                "train.gamma": gamma,
                "train.bn": bn,
                "train.label_smoothing": label_smoothing,
                "train.class_weights": class_weights,
                "train.sampler": sampler,
                "train.early_stopping": early_stopping,
                "train.monitor": monitor,
                "train.init_from": init_from,
                "train.feature_cache_dir": str(feature_cache_dir) if feature_cache_dir else None,
                "train.seed": seed,
                "train.precision": precision,
                "train.device": device,
                "augment.preset": augment,
            }
            result = train_run(from_dict(raw, overrides), out_dir, callbacks)
        finish_run(callbacks, result.metrics)
        print_metrics(result.metrics, f"{result.metrics['split']} split", quiet)
        if not quiet:
            out.print(f"run saved to [bold]{out_dir}[/bold]; model bundle in {out_dir / 'model'}")
