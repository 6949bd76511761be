"""Frozen configuration dataclasses, built once at the edge and saved into every run.

A run is fully described by :class:`RunConfig`; ``config.yaml`` in a run folder is
``RunConfig.to_dict()`` and can be fed back with ``--config``.

Every value reaches a :class:`RunConfig` through ONE function, :func:`coerce_value`, whether
it comes from YAML, ``--set section.key=value``, a CLI flag or a ``compare`` axis: it fits the
value to the field's type hint (``Literal`` choices, ``int``, ``float``, ``bool``, ``X | None``,
``tuple[int, ...]``, ``dict``) and checks the field's range (:data:`LIMITS`). Cross-field rules
(``top-n`` needs ``trainable_groups``, ...) are checked once the whole config is built.

Why plain dataclasses and one coercion function rather than pydantic: the whole code base
uses these frozen dataclasses (``cfg.train.lr``, ``dataclasses.replace``), and pydantic's lax
mode accepts what we must refuse (``True`` for an int) while its errors span several lines;
the rules below (numeric strings for numbers since PyYAML reads ``1e-3`` as a string, whole
numbers for ints, never bools for numbers) fit in a few short functions.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import math
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from transferlab.budget import parse_duration
from transferlab.errors import ConfigError

logger = logging.getLogger(__name__)

Strategy = Literal["two-stage", "scratch", "linear-probe", "top-n", "full"]
Optimizer = Literal["adamw", "adam", "sgd", "rmsprop"]
Scheduler = Literal["cosine", "none", "step", "multistep", "onecycle", "plateau"]
AugmentPreset = Literal["none", "light", "strong"]
Precision = Literal["fp32", "bf16", "fp16"]
BnMode = Literal["train", "frozen"]
Head = Literal["linear", "mlp"]
Monitor = Literal["val_macro_f1", "val_accuracy", "val_loss"]
Sampler = Literal["random", "balanced"]
ClassWeights = Literal["none", "auto"]

STRATEGIES: tuple[str, ...] = get_args(Strategy)


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are split."""

    path: str = ""
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_file: str | None = None
    # Decode every image once into memory (uint8) when it fits this budget;
    # above it, images are decoded from disk each epoch.
    memory_cache_mb: int = 4096
    num_workers: int = 0
    # Folder name -> display name (Tiny ImageNet words.txt, flowers cat_to_name.json, any
    # JSON object or key<TAB>name lines); None: words.txt of Tiny ImageNet data, else folders.
    class_names: str | None = None
    # Hash every image before splitting: copies stay in one split, and leakage across
    # given splits and copies under different labels are reported (warned, in metrics).
    audit: bool = True
    # Leakage or copies under different labels stop the run before anything is written.
    strict: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """The backbone, its weights and its input size."""

    name: str = "tf_efficientnet_lite0"
    weights: str = "imagenet"  # imagenet | none | PATH
    image_size: int | None = None  # None: the backbone's own pretrained input size
    drop_rate: float = 0.2  # dropout before the classifier
    head: Head = "linear"
    hidden_units: tuple[int, ...] = (1024, 512)  # mlp head: hidden layer widths
    head_dropout: float = 0.5  # mlp head: dropout after each hidden layer
    head_bn: bool = True  # mlp head: BatchNorm after each hidden linear layer
    # Architecture keyword arguments (e.g. stride, kernel_size, width for the AlexNets).
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation; ``preset`` sets every knob left as None."""

    preset: AugmentPreset | None = None  # None: the strategy's default
    hflip: float | None = None  # probability of a horizontal flip
    scale_min: float | None = None  # random resized crop: smallest area fraction
    rotation: float | None = None  # max degrees of random rotation
    color_jitter: float | None = None  # brightness/contrast/saturation strength
    randaugment: int | None = None  # RandAugment ops per image (0: off)
    randaugment_magnitude: int | None = None
    mixup: float | None = None  # mixup alpha (0: off)
    cutmix: float | None = None  # cutmix alpha (0: off)


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe. The default is a two-stage fine-tune for small datasets."""

    strategy: Strategy = "two-stage"
    epochs: int = 4  # main epochs (two-stage: after the head-only epochs)
    head_epochs: int = 5  # two-stage: head-only epochs first (features cached); was warmup_epochs
    trainable_groups: int | None = None  # top-n (and two-stage): last N layer groups train
    batch_size: int = 32
    lr: float = 1e-3  # learning rate of the head; the backbone gets lr * backbone_lr_mult
    head_lr: float = 3e-3  # learning rate of the head during the head-only epochs; was warmup_lr
    backbone_lr_mult: float = 0.3
    # frozen: BatchNorm of trainable layers kept in inference mode (ImageNet statistics and
    # affine). The default since issue 12: re-estimating the statistics on the new data at
    # the unfreeze undid the head's epochs ("unfreeze shock", benchmarks/README.md).
    # strategy scratch defaults to train (random BatchNorm must learn), see from_dict.
    bn: BnMode = "frozen"
    weight_decay: float = 0.02
    # Layer-wise LR decay (timm's layer_decay): each layer group below the top gets this
    # factor more; None: off. Applies to phases that train the backbone.
    layer_decay: float | None = None
    optimizer: Optimizer = "adamw"
    momentum: float = 0.9  # sgd, rmsprop
    nesterov: bool = False  # sgd
    scheduler: Scheduler = "cosine"
    lr_warmup_epochs: float = 0.0  # linear LR warm-up at the start of each phase
    step_size: int = 1  # step scheduler: epochs between decays
    milestones: tuple[int, ...] = ()  # multistep scheduler: epochs (within the phase) to decay at
    gamma: float = 0.1  # step / multistep / plateau decay factor
    plateau_patience: int = 1
    label_smoothing: float = 0.1
    class_weights: ClassWeights = "none"  # auto: inverse class frequency
    sampler: Sampler = "random"  # balanced: each class equally likely per draw
    monitor: Monitor = "val_macro_f1"  # best checkpoint and early stopping metric
    early_stopping: int | None = None  # patience in epochs (per phase); None: off
    min_delta: float = 0.0  # an epoch improves only if it beats the best by more than this
    feature_cache: bool = True  # frozen backbone + no augmentation: compute features once
    feature_cache_dir: str | None = None  # keep them on disk for later runs (compare: on)
    init_from: str | None = None  # start from these weights (bundle, run or checkpoint)
    # Exponential moving average of the weights (timm's ModelEmaV3), validated beside the
    # raw weights each epoch; the better of the two is kept. None: off.
    ema_decay: float | None = None
    # Progressive resizing: the first epochs of a phase that trains the backbone start at
    # this image size and grow to the model's, the last epoch at full size. None: off.
    resize_from: int | None = None
    # Stop training when this many seconds are spent (the CLI also takes 90s, 15m, 1h30m);
    # the run is planned to fit. None: no budget.
    time_budget: float | None = None
    precision: Precision = "fp32"
    channels_last: bool = True  # NHWC memory format: faster convolutions (1.6x a CPU epoch)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # Processes to train with (one per GPU, or CPU processes): N or auto (every GPU; 1 on CPU).
    devices: str = "1"
    compile: bool = False  # torch.compile the model before training
    sync_bn: bool = False  # BatchNorm statistics synchronised across processes
    grad_accum: int = 1  # optimizer step every K batches (effective batch: K x batch_size)
    seed: int = 0


@dataclass(frozen=True)
class Limit:
    """A numeric range: ``lo``/``hi`` inclusive unless ``*_open``; None is unbounded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, v: float) -> bool:
        above = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
        below = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
        return above and below

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        lo = "(" if self.lo_open else "["
        hi = ")" if self.hi_open else "]"
        return f"in {lo}{self.lo:g}, {self.hi:g}{hi}"


_FRACTION = Limit(0, 1, hi_open=True)  # [0, 1)
_PROBABILITY = Limit(0, 1)  # [0, 1]
_POSITIVE = Limit(0, lo_open=True)  # > 0
_NON_NEGATIVE = Limit(0)  # >= 0
_AT_LEAST_ONE = Limit(1)  # >= 1

# The valid range of every numeric key (each element, for tuples). A test checks that no
# numeric key is missing here, so a new key cannot skip its range check.
LIMITS: dict[str, Limit] = {
    "data.val_fraction": _FRACTION,
    "data.test_fraction": _FRACTION,
    "data.memory_cache_mb": _NON_NEGATIVE,
    "data.num_workers": _NON_NEGATIVE,
    "model.image_size": Limit(16),
    "model.drop_rate": _FRACTION,
    "model.hidden_units": _AT_LEAST_ONE,
    "model.head_dropout": _FRACTION,
    "augment.hflip": _PROBABILITY,
    "augment.scale_min": Limit(0, 1, lo_open=True),  # a crop keeps some of the image
    "augment.rotation": Limit(0, 180),  # degrees either way
    "augment.color_jitter": _PROBABILITY,  # factors in [1-s, 1+s] must stay >= 0
    "augment.randaugment": _NON_NEGATIVE,
    # torchvision's RandAugment has 31 magnitude bins: 0..30.
    "augment.randaugment_magnitude": Limit(0, 30),
    "augment.mixup": _NON_NEGATIVE,  # Beta(alpha, alpha); 0: off
    "augment.cutmix": _NON_NEGATIVE,
    "train.epochs": _NON_NEGATIVE,
    "train.head_epochs": _NON_NEGATIVE,
    "train.trainable_groups": _AT_LEAST_ONE,  # the model knows the maximum
    "train.batch_size": _AT_LEAST_ONE,
    "train.lr": _POSITIVE,
    "train.head_lr": _POSITIVE,
    "train.backbone_lr_mult": _POSITIVE,
    "train.weight_decay": _NON_NEGATIVE,
    "train.layer_decay": Limit(0, 1, lo_open=True),
    "train.momentum": _FRACTION,
    "train.lr_warmup_epochs": _NON_NEGATIVE,
    "train.step_size": _AT_LEAST_ONE,
    "train.milestones": _AT_LEAST_ONE,
    "train.gamma": Limit(0, 1, lo_open=True),  # a decay: the LR never grows
    "train.plateau_patience": _NON_NEGATIVE,
    "train.label_smoothing": _FRACTION,
    "train.early_stopping": _AT_LEAST_ONE,
    "train.min_delta": _NON_NEGATIVE,
    "train.seed": Limit(0, 2**32 - 1),  # numpy's seed range
    "train.ema_decay": Limit(0, 1, lo_open=True, hi_open=True),
    "train.resize_from": Limit(16),
    "train.time_budget": _POSITIVE,
    "train.grad_accum": _AT_LEAST_ONE,
}
# Examples shown when a list value cannot be read.
_LIST_EXAMPLES = {"model.hidden_units": "1024,512", "train.milestones": "10,20"}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        return {k: plain(v) for k, v in dataclasses.asdict(self).items()}

    def to_yaml(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    def validate(self) -> RunConfig:
        _validate(self)
        return self


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "augment": AugmentConfig,
}
# Keys renamed since release; old config.yaml files and --set still take them, with a warning.
RENAMED_KEYS = {"train.warmup_epochs": "train.head_epochs", "train.warmup_lr": "train.head_lr"}
# Keys in seconds that also take durations such as 15m or 1h30m (transferlab.budget).
_DURATION_KEYS = ("train.time_budget",)
# Fields whose value is a mapping: ``model.kwargs.stride`` sets one entry of it.
_MAPPING_KEYS = ("model.kwargs",)


class BadValue(ConfigError):
    """A value that does not fit its key; ``key`` lets the CLI name the option that sets it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


# --- keys --------------------------------------------------------------------------------


@functools.cache
def _hints(section: str) -> dict[str, Any]:
    return get_type_hints(_SECTIONS[section])


def known_keys() -> list[str]:
    """Every dotted config key, ``data.path`` .. ``augment.cutmix``, sorted."""
    return sorted(f"{s}.{k}" for s in _SECTIONS for k in _hints(s))


def _unknown(section: str, key: str) -> ConfigError:
    known = sorted(_hints(section))
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {section}.{close[0]}?)" if close else ""
    return ConfigError(
        f"unknown config key {section}.{key}{hint}; known keys in '{section}': {', '.join(known)}"
    )


def _split_key(dotted: str) -> tuple[str, str, str | None]:
    """``train.lr`` -> (train, lr, None); ``model.kwargs.stride`` -> (model, kwargs, stride)."""
    dotted = RENAMED_KEYS.get(dotted, dotted)
    section, _, rest = str(dotted).partition(".")
    if section not in _SECTIONS or not rest:
        raise ConfigError(
            f"'{dotted}' is not a config key; write section.key with a section of "
            f"{', '.join(_SECTIONS)} (e.g. train.lr, model.name)"
        )
    key, _, entry = rest.partition(".")
    if key not in _hints(section):
        raise _unknown(section, key)
    if entry and f"{section}.{key}" not in _MAPPING_KEYS:
        raise ConfigError(f"'{dotted}': {section}.{key} is not a mapping, it has no '{entry}'")
    return section, key, entry or None


def _warn_renamed(old: str) -> None:
    logger.warning("config key %s is now %s; please rename it", old, RENAMED_KEYS[old])


# --- values ------------------------------------------------------------------------------

_NULLS = ("null", "~", "")  # YAML's spellings of "no value"
_BOOLS = {"true": True, "yes": True, "on": True, "1": True}
_BOOLS |= {"false": False, "no": False, "off": False, "0": False}


def _expected(tp: Any) -> str:
    """How an error names a type: 'a number (float)', 'one of: a, b'."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return f"{_expected(inner[0])} or null"
    if origin is Literal:
        return "one of: " + ", ".join(map(str, args))
    if origin is tuple:
        return "a list of whole numbers"
    if origin is dict:
        return "a mapping such as {stride: 2}"
    names = {int: "a whole number (int)", float: "a number (float)", bool: "true or false"}
    return names.get(tp, "a string")


def _fail(key: str, value: Any, tp: Any, example: str = "") -> BadValue:
    hint = f", e.g. {example}" if example else ""
    return BadValue(key, f"{key}: {value!r} is not {_expected(tp)}{hint}")


def _takes_str(tp: Any) -> bool:
    return tp is str or get_origin(tp) is Literal


def _number(key: str, value: Any, tp: Any) -> float:
    """``value`` as a finite number; strings are read as numbers (YAML reads 1e-3 as text)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _fail(key, value, tp)
    try:
        number = float(value)
    except ValueError:
        raise _fail(key, value, tp) from None
    if not math.isfinite(number):
        raise _fail(key, value, tp)
    return number


def _to_int(key: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _number(key, value, int)
    if not number.is_integer():
        raise _fail(key, value, int)
    return int(number)


def _to_tuple(key: str, value: Any) -> tuple[int, ...]:
    """A list of ints from YAML, a tuple, or text such as ``1024,512`` / ``[1024, 512]``."""
    items: Any = value
    if isinstance(value, str):
        text = value.strip().strip("[]()")
        items = [v for v in re.split(r"[,\s]+", text) if v]
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    if not isinstance(items, list | tuple):
        raise _fail(key, value, tuple[int, ...], _LIST_EXAMPLES.get(key, ""))
    try:
        return tuple(_to_int(key, v) for v in items)
    except BadValue:
        raise _fail(key, value, tuple[int, ...], _LIST_EXAMPLES.get(key, "")) from None


def _to_mapping(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value) if value.strip() else {}
        except yaml.YAMLError:
            raise _fail(key, value, dict) from None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _fail(key, value, dict)
    return dict(value)


def _to_type(key: str, value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = next(a for a in get_args(tp) if a is not type(None))
        # "none" is a real value of some string keys (augment.preset, model.weights).
        nulls = _NULLS if _takes_str(inner) else (*_NULLS, "none")
        if value is None or (isinstance(value, str) and value.strip().lower() in nulls):
            return None
        return _to_type(key, value, inner)
    if origin is Literal:
        if value not in get_args(tp):
            raise _fail(key, value, tp)
        return value
    if origin is tuple:
        return _to_tuple(key, value)
    if origin is dict:
        return _to_mapping(key, value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        raise _fail(key, value, tp)
    if tp is int:
        return _to_int(key, value)
    if tp is float:
        return _number(key, value, tp)
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # a folder named 2024, a model named by a number
    raise _fail(key, value, tp)


def _check_range(key: str, typed: Any, given: Any) -> None:
    limit = LIMITS.get(key)
    if limit is None or typed is None:
        return
    for v in typed if isinstance(typed, tuple) else (typed,):
        if not limit.holds(v):
            shown = list(given) if isinstance(given, tuple) else given
            raise BadValue(key, f"{key}: {shown!r} is out of range; it must be {limit}")


def coerce_value(dotted_key: str, value: Any) -> Any:
    """``value`` fitted to the type of config key ``dotted_key`` and range-checked.

    Strings (``--set``, YAML's ``1e-3``) are read as the key's type: ``"4"`` -> 4 for an int,
    ``"1e-3"`` -> 0.001 for a float, ``"null"`` -> None where None is allowed. An int never
    takes a bool or a fraction. ``model.kwargs.NAME`` values pass as given (the model checks
    them). Raises :class:`ConfigError` (a :class:`BadValue`) naming the key and the value.
    """
    section, key, entry = _split_key(dotted_key)
    full = f"{section}.{key}"
    if entry is not None:
        return yaml.safe_load(value) if isinstance(value, str) and value.strip() else value
    if full in _DURATION_KEYS and isinstance(value, str) and value.strip().lower() not in _NULLS:
        value = parse_duration(value, full)  # "15m", "1h30m", "90s" as well as seconds
    typed = _to_type(full, value, _hints(section)[key])
    _check_range(full, typed, value)
    return typed


# --- building ----------------------------------------------------------------------------


def _put(values: dict[str, dict[str, Any]], dotted: str, value: Any) -> None:
    """Set one dotted key in ``values`` (section -> key -> value), typed and range-checked."""
    section, key, entry = _split_key(dotted)
    typed = coerce_value(dotted, value)
    if entry is None:
        values[section][key] = typed
    else:
        values[section][key] = {**_to_mapping(f"{section}.{key}", values[section].get(key, {}))}
        values[section][key][entry] = typed


def _dotted(raw: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The YAML sections as (dotted key, value) pairs, in file order."""
    pairs: list[tuple[str, Any]] = []
    for section, given in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"unknown config section '{section}'; use one of: {', '.join(_SECTIONS)}"
            )
        if given is None:
            continue
        if not isinstance(given, Mapping):
            raise ConfigError(f"config section '{section}' must be a mapping of key: value")
        pairs += [(f"{section}.{key}", value) for key, value in given.items()]
    return pairs


def _renamed_first(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Old key names warn and map to the new ones; where both are given, the new key wins."""
    given = {k for k, _ in pairs}
    out = []
    for key, value in pairs:
        if key in RENAMED_KEYS:
            _warn_renamed(key)
            if RENAMED_KEYS[key] in given:
                continue
        out.append((key, value))
    return out


def from_dict(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Build and validate a config from YAML sections and dotted ``overrides``.

    ``raw`` is ``{section: {key: value}}`` (a ``config.yaml``); ``overrides`` maps dotted keys
    (``train.lr``, ``model.kwargs.stride``) to values, strings (``--set``) or typed values
    (CLI flags, compare axes), applied after ``raw``. Every value goes through
    :func:`coerce_value`; None in ``overrides`` means null, so leave out keys that are unset.
    """
    values: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    pairs = _renamed_first(_dotted(raw)) + _renamed_first(list((overrides or {}).items()))
    for dotted, value in pairs:
        _put(values, str(dotted), value)
    if values["train"].get("strategy") == "scratch":
        values["train"].setdefault("bn", "train")  # random BatchNorm has nothing to keep
    cfg = RunConfig(**{name: cls(**values[name]) for name, cls in _SECTIONS.items()})
    if "model.hidden_units" in (overrides or {}) and cfg.model.head != "mlp":
        raise BadValue(
            "model.hidden_units",
            "model.hidden_units only shapes an mlp head; add --head mlp (model.head: mlp) "
            "or leave the hidden units out",
        )
    return cfg.validate()


def load_yaml(
    path: Path, what: str = "config file", holds: str = "sections data/model/train"
) -> dict[str, Any]:
    """Read a YAML file into a mapping, with errors that name the file and what it must hold."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc.__class__.__name__}); fix it") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping with {holds}")
    return raw


# --- rules across keys -------------------------------------------------------------------

# (holds for the config, message when it does not); each names the keys involved.
_RULES: list[tuple[Callable[[RunConfig], bool], str]] = [
    (
        lambda c: c.data.audit or not c.data.strict,
        "--strict needs the data checks; drop --set data.audit=false",
    ),
    (
        lambda c: c.data.val_fraction + c.data.test_fraction < 1,
        "--val-fraction plus --test-fraction must leave images for training (sum < 1)",
    ),
    (
        lambda c: (
            c.train.epochs > 0 or (c.train.strategy == "two-stage" and c.train.head_epochs > 0)
        ),
        "--epochs must be at least 1",
    ),
    (
        lambda c: c.train.strategy != "top-n" or c.train.trainable_groups is not None,
        "--strategy top-n needs --trainable-groups N (N >= 1: the top N layer groups below "
        "the head train)",
    ),
    (
        lambda c: c.train.strategy != "scratch" or c.model.weights in ("none", "imagenet"),
        "--strategy scratch starts from random weights; drop --weights PATH",
    ),
    (
        lambda c: c.model.head != "mlp" or bool(c.model.hidden_units),
        "--head mlp needs --hidden-units (e.g. 1024,512); for no hidden layer use --head linear",
    ),
    (
        lambda c: c.train.scheduler != "multistep" or bool(c.train.milestones),
        "--scheduler multistep needs --milestones (epochs to decay at, e.g. 10,20); without "
        "them the LR never changes",
    ),
    (
        lambda c: (
            c.train.devices == "auto" or (c.train.devices.isdigit() and int(c.train.devices) >= 1)
        ),
        "--devices must be a whole number of processes (1, 2, ...) or auto",
    ),
]


def _validate(cfg: RunConfig) -> None:
    """Rules that involve more than one key; single values were checked as they came in."""
    for f in fields(cfg):  # again, for configs built in code or by dataclasses.replace
        section = getattr(cfg, f.name)
        for key in _hints(f.name):
            coerce_value(f"{f.name}.{key}", getattr(section, key))
    for holds, message in _RULES:
        if not holds(cfg):
            raise ConfigError(message)
