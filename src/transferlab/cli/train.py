"""`transferlab train`."""

from __future__ import annotations

import os
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
    err,
    guard,
    out,
    print_metrics,
    run_config,
    setup_logging,
)

TRAIN_EXAMPLES = """
[bold]Examples[/bold]

  transferlab train examples/ahe-mini --out runs/demo
  transferlab train photos/ --out runs/b --epochs 6 --image-size 160 --seed 1
  transferlab train labels.csv --out runs/c --model tf_efficientnet_lite2
  transferlab train photos/ --out runs/d --split-file runs/demo/split.csv
  transferlab train photos/ --out runs/e --config runs/demo/config.yaml --lr 5e-4
  transferlab train flowers/ --out runs/fl --class-names flowers/cat_to_name.json

[bold]Any config key: --set section.key=value[/bold]

  transferlab train photos/ --out runs/f --set train.label_smoothing=0.05 --set model.drop_rate=0.3
  transferlab train photos/ --out runs/g --set augment.mixup=0.2 --set augment.randaugment=2
  transferlab train photos/ --out runs/h --model alexnet --weights none --set model.kwargs.stride=2

Precedence: defaults < --config YAML < --set < options such as --lr.

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

[bold]A time budget: the best model in the time you have (docs/tutorials/time-budget.md)[/bold]

  transferlab train photos/ --out runs/tb15 --time-budget 15m
  transferlab train photos/ --out runs/tb90 --time-budget 1h30m --model tf_efficientnet_lite2
  (forms: 45, 90s, 15m, 2h, 1h30m; the plan and its predicted time are printed first)

[bold]Resume and shared starting points[/bold]

  transferlab train --resume runs/demo
  transferlab train --resume runs/ddp --devices 1     # continue a 2-process run on one

[bold]More processes (docs/scale-out.md)[/bold]

  transferlab train photos/ --out runs/ddp --devices 2 --batch-size 64
  transferlab train photos/ --out runs/gpu --devices auto --precision bf16 --compile
  transferlab train photos/ --out runs/adam --init-from runs/sgd-1epoch --optimizer adam
"""


Opt = typer.Option
Key = ConfigOption  # an option that sets one config key


def _check_resume_alone(given: dict[str, object]) -> None:
    """--resume continues with the run's own config.yaml; other settings would be ignored.
    --devices is the exception: a run may continue on another number of processes."""
    from transferlab.cli._common import flag_overrides
    from transferlab.errors import ConfigError

    extra = [k for k in ("data", "out_dir", "config", "sets", "time_budget") if given.get(k)]
    if extra or set(flag_overrides(train, given)) - {"train.devices"}:
        raise ConfigError(
            "--resume continues a run with its own config.yaml and data; drop the other "
            "settings (or train a new run with --out)"
        )


@app.command(epilog=TRAIN_EXAMPLES)
def train(
    ctx: typer.Context,
    data: Annotated[
        Path | None,
        typer.Argument(help="Class folders, train/ + val/ (+ test/) folders, or a path,label CSV."),
    ] = None,
    out_dir: Annotated[Path | None, Opt("--out", help="Run folder to create.")] = None,
    resume: Annotated[Path | None, Opt(help="Continue an interrupted run folder.")] = None,
    config: ConfigFile = None,
    sets: Sets = None,
    model: Annotated[str | None, Key("model.name", help="timm or tv/ model name.")] = None,
    weights: Annotated[
        str | None, Key("model.weights", help="imagenet | none | PATH (weights/bundle).")
    ] = None,
    strategy: Annotated[
        str | None, Key("train.strategy", help="two-stage | linear-probe | top-n | full | scratch")
    ] = None,
    trainable_groups: Annotated[
        int | None, Key("train.trainable_groups", help="top-n: layer groups that train.")
    ] = None,
    epochs: Annotated[
        int | None, Key("train.epochs", help="Main epochs (two-stage: after the head epochs).")
    ] = None,
    head_epochs: Annotated[
        int | None, Key("train.head_epochs", help="two-stage: head-only epochs first.")
    ] = None,
    warmup_epochs: Annotated[
        int | None,
        Key("train.head_epochs", "--warmup-epochs", help="Old name.", renamed_to="--head-epochs"),
    ] = None,
    batch_size: Annotated[int | None, Key("train.batch_size", help="Images per batch.")] = None,
    image_size: Annotated[
        int | None, Key("model.image_size", help="Input size (default: the model's).")
    ] = None,
    lr: Annotated[float | None, Key("train.lr", help="Head learning rate.")] = None,
    backbone_lr_mult: Annotated[
        float | None, Key("train.backbone_lr_mult", help="Backbone LR = lr x this.")
    ] = None,
    layer_decay: Annotated[
        float | None,
        Key("train.layer_decay", help="Layer-wise LR decay in (0, 1]: each lower group x this."),
    ] = None,
    weight_decay: Annotated[
        float | None, Key("train.weight_decay", help="Weight decay (not on biases/norms).")
    ] = None,
    optimizer: Annotated[
        str | None, Key("train.optimizer", help="adamw | adam | sgd | rmsprop")
    ] = None,
    momentum: Annotated[float | None, Key("train.momentum", help="sgd / rmsprop momentum.")] = None,
    nesterov: Annotated[
        bool | None, Key("train.nesterov", "--nesterov/--no-nesterov", help="sgd.")
    ] = None,
    scheduler: Annotated[
        str | None,
        Key("train.scheduler", help="cosine | none | step | multistep | onecycle | plateau"),
    ] = None,
    milestones: Annotated[
        str | None, Key("train.milestones", help="multistep: epochs, e.g. 10,20.")
    ] = None,
    gamma: Annotated[
        float | None, Key("train.gamma", help="step/multistep/plateau decay factor.")
    ] = None,
    bn: Annotated[
        str | None, Key("train.bn", help="train | frozen (BatchNorm in inference mode).")
    ] = None,
    head: Annotated[str | None, Key("model.head", help="linear | mlp")] = None,
    hidden_units: Annotated[
        str | None, Key("model.hidden_units", help="mlp head widths, e.g. 1024,512.")
    ] = None,
    augment: Annotated[str | None, Key("augment.preset", help="none | light | strong")] = None,
    label_smoothing: Annotated[
        float | None, Key("train.label_smoothing", help="Label smoothing (0 to turn off).")
    ] = None,
    class_weights: Annotated[
        str | None, Key("train.class_weights", help="none | auto (inverse frequency).")
    ] = None,
    sampler: Annotated[str | None, Key("train.sampler", help="random | balanced")] = None,
    early_stopping: Annotated[
        int | None, Key("train.early_stopping", help="Patience in epochs, per phase.")
    ] = None,
    min_delta: Annotated[
        float | None,
        Key("train.min_delta", help="An epoch improves only by more than this (early stopping)."),
    ] = None,
    monitor: Annotated[
        str | None,
        Key("train.monitor", help="val_macro_f1 | val_accuracy | val_loss (best checkpoint)."),
    ] = None,
    init_from: Annotated[
        str | None, Key("train.init_from", help="Start from a bundle, run or checkpoint.")
    ] = None,
    feature_cache_dir: Annotated[
        Path | None,
        Key("train.feature_cache_dir", help="Keep frozen-backbone features here for later runs."),
    ] = None,
    seed: Annotated[
        int | None, Key("train.seed", help="Seed for split, init, order and augmentation.")
    ] = None,
    val_fraction: Annotated[
        float | None, Key("data.val_fraction", help="Share of each class for validation.")
    ] = None,
    test_fraction: Annotated[
        float | None, Key("data.test_fraction", help="Share of each class for test.")
    ] = None,
    split_file: Annotated[
        Path | None, Key("data.split_file", help="Reuse a run's split.csv.")
    ] = None,
    strict: Annotated[
        bool | None,
        Key("data.strict", "--strict", help="Stop on copies across splits or labels."),
    ] = None,
    class_names: Annotated[
        Path | None,
        Key("data.class_names", help="Display names: words.txt, cat_to_name.json or JSON."),
    ] = None,
    precision: Annotated[
        str | None, Key("train.precision", help="fp32 | bf16 | fp16 (fp16: GPU only).")
    ] = None,
    devices: Annotated[
        str | None,
        Key("train.devices", help="Processes: N or auto (every GPU; 1 on CPU); N starts them."),
    ] = None,
    compile_model: Annotated[
        bool | None,
        Key("train.compile", "--compile/--no-compile", help="torch.compile the model."),
    ] = None,
    sync_bn: Annotated[
        bool | None,
        Key("train.sync_bn", "--sync-bn/--no-sync-bn", help="BatchNorm over all processes."),
    ] = None,
    grad_accum: Annotated[
        int | None, Key("train.grad_accum", help="Optimizer step every K batches.")
    ] = None,
    time_budget: Annotated[
        str | None,
        Opt(
            "--time-budget",
            metavar="DURATION",
            help="Plan the run to fit this time and stop in time: 90s, 15m, 1h30m "
            "(train.time_budget, seconds).",
        ),
    ] = None,
    logger: Annotated[
        list[str] | None, Opt("--logger", help="tensorboard | mlflow | csv (repeatable).")
    ] = None,
    device: Annotated[str | None, Key("train.device", help="auto | cpu | cuda | cuda:N")] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Fine-tune a classifier on DATA and write a run folder: model, metrics, history, split."""
    quiet = quiet or os.environ.get("RANK", "0") != "0"  # under a launcher rank 0 reports
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab import api
        from transferlab.budget import parse_duration
        from transferlab.engine import Callback
        from transferlab.errors import ConfigError
        from transferlab.progress import EpochLogger, ProgressBar

        callbacks: list[Callback] = [EpochLogger()]
        if err.is_terminal and not quiet:
            callbacks.append(ProgressBar(err))
        if resume is not None:
            _check_resume_alone(ctx.params)
            result = api.resume(
                resume, devices=devices, progress=False, loggers=logger or [], callbacks=callbacks
            )
            out_dir = resume
        else:
            if data is None or out_dir is None:
                raise ConfigError("give DATA and --out RUN (or --resume RUN to continue a run)")
            extra: dict[str, object] = {"data.path": str(data)}
            if time_budget is not None:
                extra["train.time_budget"] = parse_duration(time_budget)
            cfg = run_config(train, ctx.params, config, sets, extra)
            result = api.train(
                data, out_dir, config=cfg, progress=False, loggers=logger or [], callbacks=callbacks
            )
        print_metrics(result.metrics, f"{result.metrics['split']} split", quiet)
        if not quiet:
            out.print(f"run saved to [bold]{out_dir}[/bold]; model bundle in {out_dir / 'model'}")
