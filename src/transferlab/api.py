"""The Python API: ``import transferlab as tl``; the CLI is a thin layer over it.

Examples:
    >>> import transferlab as tl
    >>> run = tl.train("examples/ahe-mini", image_size=64, epochs=1)  # doctest: +SKIP
    >>> run.metrics["macro_f1"]  # doctest: +SKIP
    >>> run.model.predict(["examples/samples/capitol-dome.jpg"])  # doctest: +SKIP

Every function takes the same settings, with the same defaults and checks, as the matching
command, and raises the same :mod:`transferlab.errors` exceptions with the same one-line
messages. Heavy libraries (torch, timm) are imported when a function first needs them, so
``import transferlab`` stays quick.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from transferlab.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch
    from PIL import Image

    from transferlab.audit.core import AuditResult, DuplicateGroup, Suspect
    from transferlab.backends import Backend
    from transferlab.compare import Experiment, ExperimentResult
    from transferlab.config import RunConfig
    from transferlab.crop import Boxer
    from transferlab.engine import Callback
    from transferlab.export import ExportReport
    from transferlab.lr_find import LRFindResult
    from transferlab.models.registry import ModelInfo
    from transferlab.predict import Prediction

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]  # noqa: UP007  (a runtime alias, also read by mkdocstrings)
#: What :meth:`Model.predict` takes for one image.
ImageLike = Union[str, Path, "Image.Image", "np.ndarray", "torch.Tensor"]
RUNS_DIR = Path("runs")

__all__ = [
    "Audit",
    "CropResult",
    "Evaluation",
    "ImageLike",
    "LRFind",
    "Leaderboard",
    "Model",
    "Predictions",
    "Run",
    "audit",
    "build_config",
    "compare",
    "crop_images",
    "load",
    "lr_find",
    "models",
    "resume",
    "train",
]


# ---------------------------------------------------------------- results


@dataclass
class Run:
    """A finished run folder (what ``transferlab train`` writes).

    Examples:
        >>> run = tl.load("runs/demo")  # doctest: +SKIP
        >>> run.metrics["accuracy"], run.per_class["altar"]["f1"]  # doctest: +SKIP
        >>> run  # in Jupyter: summary, curves and per-class table  # doctest: +SKIP
    """

    path: Path
    metrics: dict[str, Any] = field(repr=False)

    @classmethod
    def open(cls, path: PathLike) -> Run:
        """Read a finished run folder (one with ``metrics.json``)."""
        from transferlab.report.run_report import read_run

        files = read_run(Path(path))
        return cls(Path(path), files.metrics)

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per epoch from ``history.csv``: epoch, phase, losses, metrics, lr."""
        from transferlab.report.run_report import read_run

        return [
            {k: v if k == "phase" else _number(v) for k, v in row.items()}
            for row in read_run(self.path).history
        ]

    def history_frame(self) -> pd.DataFrame:
        """:attr:`history` as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ConfigError("history_frame needs pandas; pip install pandas") from None
        return pd.DataFrame(self.history)

    @property
    def per_class(self) -> dict[str, dict[str, Any]]:
        """Precision, recall, F1 (with 95% CIs) and support per class, on the evaluated split."""
        return dict(self.metrics.get("per_class", {}))

    @property
    def confusion(self) -> list[list[int]]:
        """Confusion matrix (rows: true class, columns: predicted), classes as in per_class."""
        return [list(map(int, r)) for r in self.metrics.get("confusion_matrix", [])]

    @property
    def model(self) -> Model:
        """The run's model bundle (``RUN/model``), loaded with PyTorch."""
        return Model.open(self.path / "model")

    @property
    def report_path(self) -> Path | None:
        """``RUN/report.html``, when it was written."""
        path = self.path / "report.html"
        return path if path.is_file() else None

    def _repr_html_(self) -> str:
        from transferlab.display import run_html

        return run_html(self.path)

    def __repr__(self) -> str:
        return (
            f"Run({str(self.path)!r}, accuracy={self.metrics.get('accuracy', 0):.4f}, "
            f"macro_f1={self.metrics.get('macro_f1', 0):.4f})"
        )


class Predictions(list["Prediction"]):
    """Predictions in input order (each a :class:`transferlab.predict.Prediction`: ``path``,
    ``label``, ``labels``, ``probabilities``, ``error``); display themselves in Jupyter.

    Examples:
        >>> preds = model.predict(["a.jpg", "b.jpg"], top_k=2)  # doctest: +SKIP
        >>> preds[0].label, preds[0].probabilities  # doctest: +SKIP
    """

    def __init__(self, items: Iterable[Prediction], images: Sequence[Any] = ()) -> None:
        super().__init__(items)
        self._images = list(images)

    def to_dicts(self) -> list[dict[str, object]]:
        """The predictions as ``predict --json`` writes them."""
        return [p.to_dict() for p in self]

    def _repr_html_(self) -> str:
        from transferlab.display import predictions_html

        return predictions_html(self, self._images)


@dataclass
class Evaluation:
    """What :meth:`Model.evaluate` measured (``metrics`` as ``evaluate --json`` prints it).

    Examples:
        >>> ev = model.evaluate("examples/ahe-mini")  # doctest: +SKIP
        >>> ev.accuracy, ev.macro_f1  # doctest: +SKIP
    """

    metrics: dict[str, Any] = field(repr=False)

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])

    @property
    def macro_f1(self) -> float:
        return float(self.metrics["macro_f1"])

    @property
    def per_class(self) -> dict[str, dict[str, Any]]:
        return dict(self.metrics.get("per_class", {}))

    def _repr_html_(self) -> str:
        from transferlab.display import metrics_html

        return metrics_html(self.metrics, f"evaluated on {self.metrics.get('evaluated', '')}")

    def __repr__(self) -> str:
        return f"Evaluation(accuracy={self.accuracy:.4f}, macro_f1={self.macro_f1:.4f})"


@dataclass
class Leaderboard:
    """An experiment folder's leaderboard (``leaderboard.json``).

    ``rows``: one dict per configuration, best first (name, model, strategy, accuracy,
    macro_f1, their 95% CIs, f1 per class, ...); ``per_class``: the per-class F1 table,
    one dict per run (and the baseline, when there is one); ``failed``: runs that failed.

    Examples:
        >>> exp = "examples/experiments/ahe-backbones.yaml"
        >>> board = tl.compare(exp, out="runs/bb")  # doctest: +SKIP
        >>> [(r["name"], r["macro_f1"]) for r in board.rows]  # doctest: +SKIP
    """

    path: Path
    rows: list[dict[str, Any]] = field(repr=False)
    per_class: list[dict[str, Any]] = field(repr=False)
    failed: list[dict[str, Any]] = field(repr=False)
    #: What the :func:`compare` call that returned this did (None when read from disk).
    outcome: ExperimentResult | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: PathLike) -> Leaderboard:
        """Read ``leaderboard.json`` of an experiment folder (written by compare/report)."""
        path = Path(path)
        file = path / "leaderboard.json"
        if not file.is_file():
            raise ConfigError(
                f"{path} has no leaderboard.json; run 'transferlab compare' (or tl.compare) first"
            )
        data = json.loads(file.read_text(encoding="utf-8"))
        return cls(path, data["runs"], data["per_class_f1"], data.get("failed", []))

    def _repr_html_(self) -> str:
        from transferlab.display import leaderboard_html

        return leaderboard_html(self.path)


@dataclass
class LRFind:
    """An LR range test: the suggestion (``result.suggestion``, with its reason), the curve
    in ``result`` and where its CSV and plot were written; displays the plot in Jupyter.

    Examples:
        >>> found = tl.lr_find("examples/ahe-mini", image_size=64, steps=30)  # doctest: +SKIP
        >>> found.suggested_lr, found.result.suggestion.reason  # doctest: +SKIP
    """

    result: LRFindResult = field(repr=False)
    context: dict[str, Any]
    csv_path: Path
    plot_path: Path

    @property
    def suggested_lr(self) -> float:
        return float(self.result.suggestion.lr)

    def _repr_html_(self) -> str:
        from transferlab.report import html

        s = self.result.suggestion
        note = html.note(escape(f"suggested lr {s.lr:.2e}: {s.reason}"))
        return note + html.img(self.plot_path.read_bytes(), "LR range test", width=560)


class Audit:
    """What :func:`audit` found (``transferlab audit``): typed findings, the CLI's JSON
    (:meth:`to_dict`, :meth:`to_json`) and its HTML page (:meth:`to_html`; inline in
    Jupyter).

    Examples:
        >>> found = tl.audit("examples/ahe-mini", features=False)  # doctest: +SKIP
        >>> found.summary["duplicate_groups"], [g.files for g in found.conflicts]  # doctest: +SKIP
    """

    def __init__(self, result: AuditResult) -> None:
        #: The audit as :mod:`transferlab.audit.core` returns it.
        self.result = result

    @property
    def images(self) -> int:
        """How many labelled images were audited."""
        return self.result.images

    @property
    def class_counts(self) -> dict[str, int]:
        """Images per class."""
        return dict(self.result.class_counts)

    @property
    def unreadable(self) -> list[tuple[str, str]]:
        """(file, reason) of each file that could not be read."""
        return list(self.result.unreadable)

    @property
    def tiny(self) -> list[str]:
        """Images with a side below 32 px."""
        return list(self.result.tiny)

    @property
    def kinds(self) -> dict[str, list[str]]:
        """Odd files by kind: greyscale, cmyk, alpha, 16-bit, exif-rotated."""
        return dict(self.result.kinds)

    @property
    def duplicates(self) -> list[DuplicateGroup]:
        """Every group of copies (exact, perceptual-hash or feature near-copies)."""
        return list(self.result.groups)

    @property
    def conflicts(self) -> list[DuplicateGroup]:
        """Copies with different labels: at least one label is wrong."""
        return [g for g in self.result.groups if g.conflict]

    @property
    def leaks(self) -> list[DuplicateGroup]:
        """Copies in different splits (train/val/test): leakage."""
        return [g for g in self.result.groups if g.leak]

    @property
    def suspects(self) -> list[Suspect]:
        """Likely label errors (feature checks only), the most likely first."""
        return list(self.result.suspects)

    @property
    def summary(self) -> dict[str, int]:
        """The counts of each finding, as in the JSON's ``summary``."""
        return self.result.summary()

    def to_dict(self) -> dict[str, Any]:
        """The findings as ``audit --json`` writes them."""
        return self.result.to_dict()

    def to_json(self, path: PathLike | None = None) -> str:
        """The JSON of ``audit --json``; written (atomically) to ``path`` when given."""
        from transferlab.audit.report import check_out_file, write_json

        if path is not None:
            check_out_file(Path(path), "--json")
            write_json(self.result, Path(path))
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_html(self, path: PathLike) -> Path:
        """Write the HTML page of ``audit --html`` (thumbnails of every group and suspect)."""
        from transferlab.audit.report import check_out_file, write_html

        check_out_file(Path(path), "--html")
        write_html(self.result, Path(path))
        return Path(path)

    def _repr_html_(self) -> str:
        from transferlab.audit.report import render_html
        from transferlab.display import page_html

        return page_html(render_html(self.result))

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"Audit({self.result.data!r}, images={s['images']}, "
            f"duplicate_groups={s['duplicate_groups']}, label_conflicts={s['label_conflicts']}, "
            f"leaks={s['leaks']}, label_issues={s['label_issues']})"
        )


@dataclass
class CropResult:
    """What :func:`crop` wrote (``transferlab crop``): the new dataset tree, how many images
    were cut to a box, kept whole or unreadable, and the CSV of boxes and scores.

    Examples:
        >>> done = tl.crop_images("cars", "cars-cropped", classes=["car"])  # doctest: +SKIP
        >>> done.boxed, done.whole, done.rows[0]["score"]  # doctest: +SKIP
    """

    out: Path
    source: str
    boxed: int
    whole: int
    unreadable: int
    boxes_csv: Path

    @property
    def rows(self) -> list[dict[str, str]]:
        """The boxes CSV: path, source, label, score, x0, y0, x1, y1, width, height."""
        import csv

        with self.boxes_csv.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))


class Model:
    """A trained model: a bundle folder, a run folder or an exported ``.onnx`` file.

    Examples:
        >>> model = tl.load("runs/demo/model")  # doctest: +SKIP
        >>> model.predict(["examples/samples/capitol-dome.jpg"], top_k=3)  # doctest: +SKIP
        >>> model.evaluate("examples/ahe-mini").macro_f1  # doctest: +SKIP
        >>> model.export("demo.onnx")  # doctest: +SKIP
    """

    def __init__(self, path: PathLike, backend: str | None = None) -> None:
        """``backend``: torch | onnx (default: onnx for ``.onnx`` files, else torch). The
        model is loaded when first needed (evaluate and export load it themselves);
        :meth:`open` loads it at once."""
        self.path = Path(path)
        self.backend_name = backend
        self._backend: Backend | None = None

    @classmethod
    def open(cls, path: PathLike, backend: str | None = None) -> Model:
        """Load the model now, so that a missing or damaged one fails here."""
        model = cls(path, backend)
        model.backend  # noqa: B018  (loads it)
        return model

    @property
    def backend(self) -> Backend:
        """The inference backend (PyTorch or ONNX Runtime) with the model loaded."""
        from transferlab.backends import load_backend

        if self._backend is None:
            self._backend = load_backend(self.path, self.backend_name)
        return self._backend

    @property
    def class_names(self) -> list[str]:
        return list(self.backend.class_names)

    def predict(
        self,
        images: ImageLike | Sequence[ImageLike],
        top_k: int = 3,
        tta: str = "none",
        reject_below: float | None = None,
    ) -> Predictions:
        """Top-k classes of each image, with probabilities.

        ``images``: one or a list of image files, folders of images, PIL images, uint8
        ``H x W x 3`` arrays or ``3 x H x W`` tensors (uint8, or float in 0..1).
        ``tta``: none | flip | five-crop | ten-crop. An unreadable file gets a prediction
        with ``error`` set, as in ``transferlab predict``. ``reject_below``: below this top
        probability the answer is ``unknown`` (top-k kept); None uses the model's own
        default (``transferlab reject-below``), 0 answers every image.

        Examples:
            >>> model.predict("examples/samples/capitol-dome.jpg")[0].label  # doctest: +SKIP
        """
        from transferlab.calibration import check_reject_below
        from transferlab.predict import predict_files
        from transferlab.tta import check_mode

        if top_k < 1:
            raise ConfigError("--top-k must be at least 1")
        check_mode(tta)
        threshold = check_reject_below(reject_below)
        if threshold is None:
            threshold = self.backend.reject_below
        items = _as_list(images)
        out: list[Prediction] = []
        shown: list[Any] = []
        for item in items:
            if isinstance(item, str | Path):
                paths = _expand(item)
                out += predict_files(self.backend, paths, top_k, tta=tta, reject_below=threshold)
                shown += [None] * len(paths)
            else:
                image = _to_pil(item)
                out.append(self._predict_image(image, len(shown), top_k, tta, threshold))
                shown.append(image)
        return Predictions(out, shown)

    def _predict_image(
        self, image: Image.Image, index: int, top_k: int, tta: str, reject_below: float | None
    ) -> Prediction:
        from transferlab.calibration import is_rejected
        from transferlab.data.transforms import to_base
        from transferlab.predict import Prediction
        from transferlab.predict import top_k as rank

        base = to_base(image, self.backend.preprocessing)
        [(labels, probs)] = rank(self.backend.predict(base, tta), self.backend.class_names, top_k)
        rejected = is_rejected(probs[0], reject_below)
        return Prediction(f"<image {index}>", labels, probs, rejected=rejected)

    def evaluate(
        self,
        data: PathLike,
        split: str = "auto",
        out: PathLike | None = None,
        tta: str = "none",
    ) -> Evaluation:
        """Accuracy and per-class precision/recall/F1 with 95% CIs on labelled images.

        ``split``: auto | test | val | all, as ``transferlab evaluate --split``; ``out``:
        also write ``metrics.json`` and ``predictions.csv`` there.

        Examples:
            >>> model.evaluate("examples/ahe-mini", split="all").accuracy  # doctest: +SKIP
        """
        from transferlab.evaluate import evaluate_model

        if split not in ("auto", "test", "val", "all"):
            raise ConfigError(f"--split '{split}' is not one of: auto, test, val, all")
        backend = self._backend.name if self._backend is not None else self.backend_name
        metrics = evaluate_model(
            self.path, Path(data), split, Path(out) if out is not None else None, backend, tta
        )
        return Evaluation(metrics)

    def export(
        self,
        out: PathLike,
        format: str = "onnx",
        data: PathLike | None = None,
        quantize: str | None = None,
        prune: float | None = None,
        finetune_epochs: int = 0,
        calibration: PathLike | None = None,
    ) -> ExportReport:
        """Export to ONNX or TorchScript (optionally int8 or pruned), checked against
        PyTorch on real images, as ``transferlab export``; returns its report.

        Examples:
            >>> model.export("demo.onnx").parity_max_abs_diff  # doctest: +SKIP
        """
        from transferlab.export import ExportOptions, export_model

        options = ExportOptions(
            format,
            Path(out),
            Path(data) if data is not None else None,
            quantize,
            prune,
            finetune_epochs,
            Path(calibration) if calibration is not None else None,
        )
        return export_model(self.path, options)

    def explain(self, images: PathLike | Sequence[PathLike], out_dir: PathLike) -> dict[Path, Path]:
        """Grad-CAM heat maps of each image's predicted class, as ``predict --explain``:
        ``<name>.gradcam.png`` per image in ``out_dir``; returns {image file: PNG}.

        ``images``: image files or folders of images. An unreadable file gets no heat map
        (it is logged, as ``predict`` warns about it). Torch backend only: Grad-CAM needs
        gradients, which ONNX Runtime does not give.

        Examples:
            >>> pngs = model.explain("examples/samples", "heat-maps")  # doctest: +SKIP
            >>> pngs[Path("examples/samples/capitol-dome.jpg")].name  # doctest: +SKIP
            'capitol-dome.gradcam.png'
        """
        from transferlab.backends import TorchBackend
        from transferlab.explain import NEEDS_TORCH, write_explanations
        from transferlab.predict import predict_files

        if self.backend_name == "onnx" or self.path.suffix.lower() == ".onnx":
            raise ConfigError(NEEDS_TORCH)  # before loading, as the CLI refuses it
        items = _as_list(images)
        if not all(isinstance(item, str | Path) for item in items):
            raise ConfigError("explain takes image files or folders; save in-memory images first")
        paths = [p for item in items for p in _expand(item)]
        runner = self.backend
        if not isinstance(runner, TorchBackend):
            raise ConfigError(NEEDS_TORCH)
        # reject_below=0: every readable image keeps its top class, the one to explain.
        results = predict_files(runner, paths, 1, reject_below=0.0)
        for r in results:
            if r.error:
                logger.warning("%s: %s; no heat map", r.path, r.error)
        done = [(Path(r.path), r.labels[0]) for r in results if not r.error]
        pngs = write_explanations(
            runner.model, runner.preprocessing, runner.class_names, done, Path(out_dir)
        )
        return {path: png for (path, _), png in zip(done, pngs, strict=True)}

    def set_reject_below(self, threshold: float | None) -> Path:
        """Store the model's default ``reject_below`` (None: answer every image) in its
        ``model.json``, as ``transferlab reject-below``; returns that file. Later
        :meth:`predict` calls (and ``predict``, ``serve``, ``stream``) use it.

        Examples:
            >>> model.set_reject_below(0.6)  # doctest: +SKIP
            PosixPath('runs/demo/model/model.json')
        """
        from transferlab.bundle import set_reject_below
        from transferlab.calibration import check_reject_below

        value = check_reject_below(threshold, "reject-below")
        written = set_reject_below(self.path, value)
        self._backend = None  # loaded again with the new default when next needed
        return written

    def __repr__(self) -> str:
        if self._backend is None:
            return f"Model({str(self.path)!r}, backend={self.backend_name})"
        return (
            f"Model({str(self.path)!r}, {self._backend.architecture}, "
            f"{len(self.class_names)} classes, backend={self._backend.name})"
        )


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _as_list(images: ImageLike | Sequence[ImageLike]) -> list[Any]:
    if isinstance(images, str | Path) or not isinstance(images, Sequence):
        return [images]
    return list(images)


def _expand(item: PathLike) -> list[Path]:
    from transferlab.predict import expand_inputs

    paths = expand_inputs([Path(item)])
    if not paths:
        raise DatasetError(f"no image files found in {item}")
    return paths


def _to_pil(image: Any) -> Image.Image:
    """PIL image, H x W x 3 uint8 array or 3 x H x W tensor -> RGB PIL image."""
    import numpy as np
    import torch
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.is_floating_point():
            t = (t.clamp(0, 1) * 255).round()
        if t.ndim != 3 or t.shape[0] != 3:
            raise ConfigError(f"an image tensor must be 3 x H x W; got {tuple(t.shape)}")
        image = t.to(torch.uint8).permute(1, 2, 0).numpy()
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ConfigError(
                f"an image array must be H x W x 3 uint8; got {image.shape} {image.dtype}"
            )
        return Image.fromarray(image)
    raise ConfigError(
        f"cannot read an image from a {type(image).__name__}; give a path, a PIL image, "
        "an H x W x 3 uint8 array or a 3 x H x W tensor"
    )


# ---------------------------------------------------------------- functions


def _fresh_out(data: PathLike) -> Path:
    """``runs/<data name>-<timestamp>``, with -2, -3, ... if that exists (never clobbers)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(data).resolve().stem or "run"
    base = RUNS_DIR / f"{name}-{stamp}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _dotted(name: str) -> str:
    """A keyword (``label_smoothing``) as its config key (``train.label_smoothing``)."""
    from transferlab.config import known_keys

    if "." in name:
        return name
    matches = [k for k in known_keys() if k.split(".", 1)[1] == name]
    if len(matches) != 1:
        hint = f"one of {', '.join(matches)}" if matches else "section.key, e.g. 'train.lr'"
        raise ConfigError(f"unknown setting '{name}'; give it as {hint}")
    return matches[0]


def _raw_config(config: RunConfig | Mapping[str, Any] | PathLike | None) -> dict[str, Any]:
    from transferlab.config import RunConfig, load_yaml

    if config is None:
        return {}
    if isinstance(config, RunConfig):
        return config.to_dict()
    if isinstance(config, str | Path):
        return load_yaml(Path(config))
    return dict(config)


def build_config(
    data: PathLike,
    config: RunConfig | Mapping[str, Any] | PathLike | None = None,
    **settings: Any,
) -> RunConfig:
    """The run config for ``data``: defaults < ``config`` (a RunConfig, a config.yaml path or
    sections as a dict) < ``settings`` (``epochs=2`` or ``**{"train.lr": 3e-4}``), through
    the one coercion point :func:`transferlab.config.from_dict`.

    Examples:
        >>> tl.build_config("photos", epochs=2, label_smoothing=0.05).train.epochs  # doctest: +SKIP
        2
    """
    from transferlab.config import from_dict

    overrides = {_dotted(k): v for k, v in settings.items() if v is not None}
    overrides = {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()}
    return from_dict(_raw_config(config), {**overrides, "data.path": str(data)})


def _callbacks(
    progress: bool, callbacks: Sequence[Callback], loggers: Sequence[str], out: Path
) -> list[Callback]:
    from transferlab.progress import NotebookProgress
    from transferlab.trackers import check_loggers, make_loggers

    chosen: list[Callback] = [NotebookProgress()] if progress else []
    # make_loggers creates the run folder: only when a tracker needs it, so that a run whose
    # data or settings are refused leaves nothing behind.
    wanted = check_loggers(list(loggers))
    trackers = make_loggers(wanted, out) if wanted and _tracks_here() else []
    return [*chosen, *callbacks, *trackers]


def _tracks_here() -> bool:
    """Whether this process makes the run's trackers: under a launcher (torchrun,
    ``accelerate launch``) every rank runs the same call, and only rank 0 (the one that
    writes the run folder) may log, or each tracker's files would come once per process."""
    from transferlab.launch import is_main_process

    return is_main_process()


def train(
    data: PathLike,
    out: PathLike | None = None,
    *,
    model: str | None = None,
    strategy: str | None = None,
    epochs: int | None = None,
    image_size: int | None = None,
    time_budget: float | str | None = None,
    config: RunConfig | Mapping[str, Any] | PathLike | None = None,
    progress: bool = True,
    loggers: Sequence[str] = (),
    callbacks: Sequence[Callback] = (),
    **overrides: Any,
) -> Run:
    """Fine-tune a classifier on ``data`` and write a run folder, as ``transferlab train``.

    ``data``: class folders, train/ + val/ (+ test/) folders or a ``path,label`` CSV.
    ``out``: the run folder; None: a fresh ``runs/<data>-<timestamp>``. ``config``: a
    RunConfig, a ``config.yaml`` path or sections as a dict; ``overrides``: any config key,
    by its name (``lr=3e-4``) or dotted (``**{"train.lr": 3e-4}``); they win over
    ``config``. ``time_budget``: seconds or a duration (``"15m"``, ``"1h30m"``) for the
    whole run: it is probed and planned to fit (image sizes, epochs), and stopped in time
    (the best epoch kept); ``metrics["time_budget"]`` has the plan, predicted and actual
    seconds (see docs/tutorials/time-budget.md).
    ``progress=False`` draws no progress bars; ``loggers``: tensorboard | mlflow | csv.

    Examples:
        >>> run = tl.train("examples/ahe-mini", image_size=64, head_epochs=1)  # doctest: +SKIP
        >>> run.metrics["macro_f1"]  # doctest: +SKIP
        >>> tl.train("photos", time_budget="15m").metrics["time_budget"]  # doctest: +SKIP
    """
    from transferlab.budget import parse_duration
    from transferlab.pipeline import train_run
    from transferlab.trackers import finish_run

    named = {
        "model.name": model,
        "train.strategy": strategy,
        "train.epochs": epochs,
        "model.image_size": image_size,
        "train.time_budget": parse_duration(time_budget) if time_budget is not None else None,
    }
    cfg = build_config(data, config, **overrides, **{k: v for k, v in named.items() if v})
    run_dir = Path(out) if out is not None else _fresh_out(data)
    cbs = _callbacks(progress, callbacks, loggers, run_dir)
    result = train_run(cfg, run_dir, cbs)
    finish_run(cbs, result.metrics)
    return Run(run_dir, result.metrics)


def resume(
    run: PathLike,
    *,
    devices: int | str | None = None,
    progress: bool = True,
    loggers: Sequence[str] = (),
    callbacks: Sequence[Callback] = (),
) -> Run:
    """Continue an interrupted run from its last checkpoint, as ``train --resume``.

    ``devices``: continue on this many processes (``1``, ``2``, ... or ``"auto"``, as
    ``train --resume RUN --devices N``) instead of the run's own ``train.devices``; under
    a launcher (torchrun) the launcher's count. Only the same count as the run started
    with continues bit for bit (see docs/scale-out.md).

    Examples:
        >>> tl.resume("runs/demo")  # doctest: +SKIP
        >>> tl.resume("runs/ddp", devices=1)  # a 2-process run on one  # doctest: +SKIP
    """
    from transferlab.pipeline import resume_run
    from transferlab.trackers import finish_run

    run_dir = Path(run)
    count = None if devices is None else _devices(devices)
    cbs = _callbacks(progress, callbacks, loggers, run_dir)
    result = resume_run(run_dir, cbs, devices=count)
    finish_run(cbs, result.metrics)
    return Run(run_dir, result.metrics)


def _devices(devices: int | str) -> str:
    """``devices`` checked as ``train.devices`` is (the one coercion point and its rule),
    so a bad count is the same one line as ``--devices`` and nothing is touched."""
    from transferlab.config import from_dict

    return from_dict({}, {"train.devices": devices}).train.devices


def load(path: PathLike, backend: str | None = None) -> Run | Model:
    """A finished run folder as a :class:`Run`; a bundle folder or ``.onnx`` file as a
    :class:`Model` (``backend``: torch | onnx).

    Examples:
        >>> tl.load("runs/demo").metrics["accuracy"]  # doctest: +SKIP
        >>> tl.load("demo.onnx").predict("examples/samples/capitol-dome.jpg")  # doctest: +SKIP
    """
    p = Path(path)
    if p.is_dir() and (p / "metrics.json").is_file() and backend is None:
        return Run.open(p)
    return Model.open(p, backend)


def _experiment_file(experiment: Mapping[str, Any], out: Path) -> Path:
    """A dict experiment as YAML in ``out``; its relative paths are taken from the current
    folder (there is no file to be relative to)."""
    import yaml

    from transferlab.files import replace_when_done

    raw = dict(experiment)
    for key in ("dataset", "split_file", "baseline"):
        if raw.get(key):
            raw[key] = str(Path(raw[key]).expanduser().resolve())
    raw.setdefault("name", out.resolve().name)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "experiment.yaml"
    text = yaml.safe_dump(raw, sort_keys=False)
    replace_when_done(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


@dataclass(frozen=True)
class CompareCallbacks:
    """The callbacks :func:`compare` gives each run: a progress display, the caller's
    callbacks (or what its function makes for the run folder) and the trackers. A
    module-level class rather than a closure, so that it pickles: with ``parallel`` it
    travels to the worker process that trains the run."""

    progress: bool
    loggers: tuple[str, ...] = ()
    callbacks: Sequence[Callback] | Callable[[Path], Sequence[Callback]] = ()
    #: Runs train in worker processes: one log line per epoch instead of bars (the
    #: workers' bars would interleave, and a notebook does not show them).
    parallel: bool = False

    def __call__(self, run_dir: Path) -> list[Callback]:
        from transferlab.progress import EpochLogger, NotebookProgress
        from transferlab.trackers import make_loggers

        chosen: list[Callback] = []
        if self.progress:
            chosen.append(EpochLogger() if self.parallel else NotebookProgress())
        given = self.callbacks(run_dir) if callable(self.callbacks) else self.callbacks
        return [*chosen, *given, *make_loggers(self.loggers, run_dir)]


def compare(
    experiment: PathLike | Mapping[str, Any] | Experiment,
    out: PathLike,
    *,
    repeats: int | None = None,
    baseline: PathLike | None = None,
    baseline_run: str | None = None,
    data: PathLike | None = None,
    loggers: Sequence[str] = (),
    fail_fast: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback] | Callable[[Path], Sequence[Callback]] = (),
    parallel: int = 1,
    time_budget: float | str | None = None,
) -> Leaderboard:
    """Train every configuration of an experiment on one split and write the leaderboard,
    as ``transferlab compare``. ``experiment``: a YAML file, the same content as a dict, or
    one read by :func:`plan_experiment` (then ``repeats``, ``baseline``, ``baseline_run``
    and ``data`` are already in it).
    Finished runs under ``out`` are skipped, interrupted ones resumed. A failed run is in
    :attr:`Leaderboard.failed` (with ``fail_fast``, its error is raised); what this call
    trained, resumed, skipped and saw fail is in :attr:`Leaderboard.outcome`.
    ``callbacks``: callbacks for every run, or a function of the run folder that makes them.

    ``parallel``: runs at once, each in a worker process of its own (``compare
    --parallel N``): one GPU per run, or on a CPU an equal share of the cores. The
    ``callbacks`` are then pickled to the workers (callback classes and functions defined
    at module level, not closures or lambdas), and ``progress`` is one log line per epoch
    of each run instead of a bar. ``time_budget``: seconds or a duration (``"30m"``,
    ``"1h30m"``) for all the runs still to do, shared out as each run's
    ``train.time_budget`` when it starts (``compare --time-budget``).

    Examples:
        >>> board = tl.compare({"dataset": "examples/ahe-mini",
        ...     "base": {"model": {"image_size": 64}, "train": {"epochs": 1}},
        ...     "axes": {"model.name": ["convnet1", "convnet2"]}}, out="runs/cmp")  # doctest: +SKIP
        >>> board.rows[0]["name"]  # doctest: +SKIP
        >>> tl.compare("exp.yaml", "runs/exp", parallel=2, time_budget="30m")  # doctest: +SKIP
    """
    from transferlab.budget import parse_duration
    from transferlab.compare import Experiment, run_experiment
    from transferlab.trackers import check_loggers

    seconds = None if time_budget is None else parse_duration(time_budget, "--time-budget")
    out_dir = Path(out)
    exp = (
        experiment
        if isinstance(experiment, Experiment)
        else plan_experiment(experiment, out_dir, repeats, baseline, baseline_run, data)
    )
    names = tuple(check_loggers(list(loggers)))
    factory = CompareCallbacks(progress, names, callbacks, parallel > 1)
    outcome = run_experiment(
        exp, out_dir, factory, fail_fast=fail_fast, parallel=parallel, time_budget=seconds
    )
    board = Leaderboard.open(out_dir)
    board.outcome = outcome
    return board


def plan_experiment(
    experiment: PathLike | Mapping[str, Any],
    out: Path,
    repeats: int | None = None,
    baseline: PathLike | None = None,
    baseline_run: str | None = None,
    data: PathLike | None = None,
) -> Experiment:
    """Read and check an experiment (file or dict) with its baseline: what compare runs."""
    from transferlab.compare import check_baseline, choose_baseline, load_experiment

    file = (
        Path(experiment)
        if isinstance(experiment, str | Path)
        else _experiment_file(experiment, out)
    )
    exp = load_experiment(file, repeats, Path(data) if data is not None else None)
    exp = choose_baseline(exp, Path(baseline) if baseline else None, baseline_run)
    check_baseline(exp)
    return exp


def models(offline: bool = False, pattern: str = "*") -> list[ModelInfo]:
    """Backbone names (timm and ``tv/`` torchvision) matching a shell-style ``pattern``;
    ``offline``: only those whose ImageNet weights need no network.

    Examples:
        >>> [m.name for m in tl.models(offline=True)]  # doctest: +SKIP
        ['tf_efficientnet_lite0', 'tf_efficientnet_lite1', 'tf_efficientnet_lite2']
    """
    from transferlab.models.registry import list_models

    rows = list_models(offline=offline, pattern=pattern)
    if not rows:
        which = "model with offline weights" if offline else "model"
        raise ConfigError(
            f"--filter '{pattern}' matches no {which}; patterns are shell-style, "
            "e.g. --filter 'resnet*' or --filter '*efficientnet*'"
        )
    return rows


def lr_find(
    data: PathLike,
    out: PathLike = "lr-find",
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    config: RunConfig | Mapping[str, Any] | PathLike | None = None,
    **overrides: Any,
) -> LRFind:
    """LR range test, as ``transferlab lr-find``: raise the LR exponentially over
    mini-batches, write ``lr_find.csv`` and ``lr_find.png`` into ``out``, suggest an LR.

    Examples:
        >>> tl.lr_find("examples/ahe-mini", image_size=64, steps=30).suggested_lr  # doctest: +SKIP
    """
    from transferlab.lr_find import check_range

    check_range(start_lr, end_lr, steps)
    cfg = build_config(data, config, **overrides)
    return lr_find_config(cfg, Path(out), start_lr, end_lr, steps)


def lr_find_config(cfg: RunConfig, out: Path, start_lr: float, end_lr: float, steps: int) -> LRFind:
    """:func:`lr_find` on a built config (the CLI builds it with its option names)."""
    from transferlab.lr_find import find_lr, write_csv, write_plot

    result, ctx = find_lr(cfg, start_lr, end_lr, steps)
    csv_path = write_csv(result, out / "lr_find.csv")
    title = (
        f"LR range test: {ctx['model']} ({ctx['weights']}), {ctx['optimizer']}, "
        f"{ctx['image_size']} px"
    )
    return LRFind(result, ctx, csv_path, write_plot(result, out / "lr_find.png", title))


def audit(
    data: PathLike,
    *,
    split_file: PathLike | None = None,
    features: bool = True,
    model: str = "tf_efficientnet_lite0",
    image_size: int | None = None,
    feature_cache_dir: PathLike | None = None,
    similarity: float | None = None,
    seed: int = 0,
) -> Audit:
    """Check ``data`` before training, as ``transferlab audit``: unreadable and odd files,
    duplicates (within a class, across classes, across the splits of the layout or of
    ``split_file``) and, with ``features``, backbone near-copies and likely label errors.

    ``model``/``image_size``: the backbone of the feature checks; ``feature_cache_dir``
    keeps its features for the next audit; ``similarity``: the feature cosine from which
    two images are near-copies (default 0.92); ``seed``: of the label probe's folds.

    Examples:
        >>> found = tl.audit("examples/ahe-mini", features=False)  # doctest: +SKIP
        >>> found.leaks, found.conflicts, found.unreadable  # doctest: +SKIP
        >>> found  # in Jupyter: the audit's HTML page with thumbnails  # doctest: +SKIP
    """
    from transferlab.audit.core import COSINE_SIMILARITY, audit_data

    if image_size is not None and image_size < 16:
        raise ConfigError(f"--image-size must be at least 16; got {image_size}")
    similarity = COSINE_SIMILARITY if similarity is None else similarity
    if not 0 < similarity <= 1:
        raise ConfigError(f"--similarity must be in (0, 1]; got {similarity}")
    result = audit_data(
        Path(data),
        Path(split_file) if split_file is not None else None,
        model if features else None,
        image_size,
        Path(feature_cache_dir) if feature_cache_dir is not None else None,
        seed,
        similarity,
    )
    return Audit(result)


def crop_images(
    data: PathLike,
    out: PathLike,
    *,
    classes: Sequence[str] | None = None,
    detector: str | None = None,
    margin: float = 0.1,
    min_score: float | None = None,
    saliency: PathLike | None = None,
) -> CropResult:
    """Cut each image of ``data`` to the largest box of the wanted objects (the whole image
    if none) into the new dataset tree ``out``, with ``crop-boxes.csv``, as
    ``transferlab crop``.

    ``classes``: COCO classes to crop to (default: any); ``detector``: a torchvision
    detection model name or its weights file (default: fasterrcnn_mobilenet_v3_large_fpn);
    ``min_score``: ignore boxes below it (default 0.5); ``margin``: grow the box by this
    fraction on each side. ``saliency``: instead of a detector, box the Grad-CAM map of this
    trained model's top class (a run or bundle folder); the detector's options are then
    refused. Unreadable images are logged, listed in the CSV and counted in
    :attr:`CropResult.unreadable`.

    Examples:
        >>> tl.crop_images("cars", "cars-cropped", classes=["car", "truck"])  # doctest: +SKIP
        >>> tl.crop_images("photos", "cropped", saliency="runs/demo", margin=0)  # doctest: +SKIP
    """
    from transferlab.crop import (
        BOXES_FILE,
        DEFAULT_DETECTOR,
        check_classes,
        check_out,
        crop_dataset,
        detector_boxer,
        load_detector,
    )

    data_dir, out_dir = Path(data), Path(out)
    _fraction(margin, "--margin")
    if min_score is not None:
        _fraction(min_score, "--min-score")
    check_out(data_dir, out_dir)
    if saliency is not None:
        _saliency_only(Path(saliency), classes, detector, min_score)
        boxer, source = _saliency_boxer(Path(saliency)), "saliency"
    else:
        found = load_detector(detector or DEFAULT_DETECTOR)
        names = classes.split(",") if isinstance(classes, str) else classes
        wanted = check_classes(list(names), found.categories) if names is not None else None
        score = DEFAULT_MIN_SCORE if min_score is None else min_score
        boxer, source = detector_boxer(found, wanted, score), f"detector:{found.name}"
    summary = crop_dataset(data_dir, out_dir, boxer, margin, source)
    csv = summary.csv or out_dir / BOXES_FILE  # crop_dataset always writes it
    return CropResult(out_dir, source, summary.boxed, summary.whole, summary.unreadable, csv)


DEFAULT_MIN_SCORE = 0.5


def _fraction(value: float, option: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{option} {value} is out of range; use a number in [0, 1]")


def _saliency_only(
    saliency: Path, classes: object, detector: str | None, score: float | None
) -> None:
    """The detector's options mean nothing with saliency: refuse them, never ignore them."""
    options = (("--classes", classes), ("--detector", detector), ("--min-score", score))
    given = [name for name, value in options if value is not None]
    if given:
        raise ConfigError(
            f"--saliency {saliency} boxes the classifier's own Grad-CAM map; {', '.join(given)} "
            "belong to the detector: drop them or --saliency"
        )


def _saliency_boxer(run: Path) -> Boxer:
    from transferlab.bundle import find_bundle_dir, load_bundle
    from transferlab.crop import saliency_boxer
    from transferlab.explain import target_layer

    bundle = load_bundle(find_bundle_dir(run))
    target_layer(bundle.model)  # a model Grad-CAM cannot read fails before anything is written
    return saliency_boxer(bundle.model, bundle.preprocessing, bundle.class_names)
