"""The command line end to end: ``train`` -> ``evaluate`` -> ``predict`` on a tiny dataset
with unreadable files and awkward names, run folder contents, exit codes, help, determinism.

Training runs go through a real subprocess (``python -m transferlab``) exactly as a user
types them; quick error and help checks use Typer's ``CliRunner`` in-process.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import typer.main
import yaml
from safetensors.torch import load_file

from helpers import AWKWARD_NAME, CLASSES, bad_files, copy_photos, example_photos, invoke
from transferlab.bundle import load_bundle
from transferlab.cli import app

# Small enough for a 2-core CI machine: one head epoch, one fine-tuning epoch, 64 px.
FAST = ["--image-size", "64", "--epochs", "1", "--head-epochs", "1", "--batch-size", "8"]
CPU_SEED = ["--device", "cpu", "--seed", "0"]
RUN_FILES = {
    "config.yaml",
    "split.csv",
    "history.csv",
    "metrics.json",
    "predictions.csv",
    "model/model.json",
    "model/model.safetensors",
    "checkpoints/best.pt",
    "checkpoints/last.pt",
}


def transferlab(*args: object, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a fresh interpreter; never touches the network."""
    return subprocess.run(
        [sys.executable, "-m", "transferlab", *map(str, args)],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@dataclass
class Dataset:
    root: Path
    bad: list[str]  # names of the files that cannot be used


@dataclass
class Run:
    path: Path
    proc: subprocess.CompletedProcess[str]

    def json(self, name: str) -> dict:
        return json.loads((self.path / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def dataset(workdir: Path) -> Dataset:
    """3 classes x 8 photos, one more with an awkward name, and four unusable files."""
    root = workdir / "data"
    for label in CLASSES:
        copy_photos(label, root / label, 8)
    shutil.copy(example_photos("apse", 9)[8], root / "apse" / AWKWARD_NAME)
    bad = [p.name for p in bad_files(root / "altar").values()]
    (root / "dome(inner)" / "notes.txt").write_text("taken on a rainy day\n", encoding="utf-8")
    return Dataset(root, [*bad, "notes.txt"])


@pytest.fixture(scope="module")
def run(workdir: Path, dataset: Dataset) -> Run:
    # Relative paths, as typed in a shell at the data's parent folder.
    proc = transferlab("train", "data", "--out", "run", *FAST, *CPU_SEED, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    return Run(workdir / "run", proc)


@pytest.fixture(scope="module")
def rerun(workdir: Path, run: Run) -> Run:
    """The same run again from its config.yaml and split.csv (no other options)."""
    args = "train data --out rerun --config run/config.yaml --split-file run/split.csv"
    proc = transferlab(*args.split(), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    return Run(workdir / "rerun", proc)


@pytest.fixture(autouse=True)
def _logging(restore_transferlab_logging: None) -> None:
    """In-process CLI calls reconfigure logging; restore it after each test."""


# --- train ------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_prints_the_per_class_table(run: Run) -> None:
    out = run.proc.stdout
    assert "per-class results on test split" in out
    assert "4 unreadable files skipped" in out
    for row in [*CLASSES, "macro avg", "accuracy"]:
        assert any(line.strip("│ ").startswith(row) for line in out.splitlines()), row
    assert "Traceback" not in run.proc.stderr


@pytest.mark.slow
def test_train_names_every_unreadable_file(run: Run, dataset: Dataset) -> None:
    warnings = "\n".join(ln for ln in run.proc.stderr.splitlines() if ln.startswith("warning:"))
    for name in dataset.bad:
        assert name in warnings


@pytest.mark.slow
def test_train_warns_once_about_unreadable_files(run: Run, dataset: Dataset) -> None:
    warnings = [ln for ln in run.proc.stderr.splitlines() if ln.startswith("warning: skipped")]
    assert len(warnings) == 1, warnings
    assert all(name in warnings[0] for name in dataset.bad)


@pytest.mark.slow
def test_run_folder_holds_everything(run: Run) -> None:
    found = {p.relative_to(run.path).as_posix() for p in run.path.rglob("*") if p.is_file()}
    assert found >= RUN_FILES


@pytest.mark.slow
def test_metrics_json(run: Run, dataset: Dataset) -> None:
    m = run.json("metrics.json")
    names = sorted(CLASSES)
    assert m["class_names"] == names
    assert list(m["per_class"]) == names
    for stats in m["per_class"].values():
        assert {"precision", "recall", "f1", "support"} <= set(stats)
    for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
        assert 0.0 <= m[key] <= 1.0
    for key in ("weighted_precision", "weighted_recall", "weighted_f1"):
        assert 0.0 <= m[key] <= 1.0
    cm = m["confusion_matrix"]
    assert len(cm) == 3 and all(len(row) == 3 for row in cm)
    assert sum(map(sum, cm)) == 3  # one test image per class
    assert m["accuracy"] == pytest.approx(sum(cm[i][i] for i in range(3)) / 3)
    assert [row_sum for row_sum in map(sum, cm)] == [s["support"] for s in m["per_class"].values()]
    assert m["skipped_files"] == len(dataset.bad) == 4
    assert sorted(Path(s["path"]).name for s in m["skipped"]) == sorted(dataset.bad)


@pytest.mark.slow
def test_history_has_a_row_per_epoch(run: Run) -> None:
    rows = read_csv(run.path / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [r["phase"] for r in rows] == ["head", "finetune"]
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("train_loss", "val_loss"))


@pytest.mark.slow
def test_split_csv_lists_every_usable_image_once(run: Run, dataset: Dataset) -> None:
    rows = read_csv(run.path / "split.csv")
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 25  # 3 x 8 + the awkward name
    assert f"apse/{AWKWARD_NAME}" in paths
    assert not {Path(p).name for p in paths} & set(dataset.bad)
    assert all((dataset.root / p).is_file() for p in paths)  # relative to the data folder
    per_class = Counter((r["label"], r["split"]) for r in rows)
    assert per_class == {
        **{(c, "val"): 1 for c in CLASSES},  # round(8 x 0.15) = round(9 x 0.15) = 1
        **{(c, "test"): 1 for c in CLASSES},
        ("altar", "train"): 6,
        ("apse", "train"): 7,
        ("dome(inner)", "train"): 6,
    }


@pytest.mark.slow
def test_predictions_csv_covers_the_test_split(run: Run) -> None:
    rows = read_csv(run.path / "predictions.csv")
    test = {r["path"]: r["label"] for r in read_csv(run.path / "split.csv") if r["split"] == "test"}
    assert {r["path"]: r["label"] for r in rows} == test
    for r in rows:
        probs = {c: float(r[f"p_{c}"]) for c in sorted(CLASSES)}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert r["predicted"] == max(probs, key=probs.__getitem__)
        assert float(r["confidence"]) == max(probs.values())


@pytest.mark.slow
def test_model_bundle_and_checkpoints(run: Run) -> None:
    bundle = load_bundle(run.path / "model")
    assert bundle.class_names == sorted(CLASSES)
    assert bundle.preprocessing.input_size == 64
    bundled = load_file(str(run.path / "model" / "model.safetensors"))
    best = torch.load(run.path / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run.path / "checkpoints" / "last.pt", weights_only=True)
    assert set(last["model"]) == set(bundled)
    assert all(torch.equal(best["model"][k], v) for k, v in bundled.items())  # best is bundled


@pytest.mark.slow
def test_config_yaml_records_the_resolved_run(run: Run, dataset: Dataset) -> None:
    cfg = yaml.safe_load((run.path / "config.yaml").read_text(encoding="utf-8"))
    assert Path(cfg["data"]["path"]) == dataset.root.resolve()
    assert cfg["model"]["image_size"] == 64
    assert (cfg["train"]["epochs"], cfg["train"]["head_epochs"]) == (1, 1)
    assert (cfg["train"]["batch_size"], cfg["train"]["seed"]) == (8, 0)


@pytest.mark.slow
def test_rerun_from_config_and_split_file_is_identical(run: Run, rerun: Run) -> None:
    # Same seed on the CPU, same config, same split: the same numbers and the same weights.
    assert (rerun.path / "split.csv").read_bytes() == (run.path / "split.csv").read_bytes()
    numbers = ("epoch", "phase", "train_loss", "val_loss", "val_accuracy", "val_macro_f1")
    first, second = (
        [tuple(row[k] for k in numbers) for row in read_csv(r.path / "history.csv")]
        for r in (run, rerun)
    )
    assert first == second
    a = load_file(str(run.path / "model" / "model.safetensors"))
    b = load_file(str(rerun.path / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    cfg_a, cfg_b = (
        yaml.safe_load((r.path / "config.yaml").read_text(encoding="utf-8")) for r in (run, rerun)
    )
    cfg_b["data"]["split_file"] = None
    assert cfg_a == cfg_b


@pytest.mark.slow
def test_config_yaml_split_file_works_from_any_folder(workdir: Path, rerun: Run) -> None:
    cfg = yaml.safe_load((rerun.path / "config.yaml").read_text(encoding="utf-8"))
    assert Path(cfg["data"]["split_file"]).resolve() == (workdir / "run" / "split.csv").resolve()


# --- evaluate and predict ---------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_reproduces_the_test_metrics(workdir: Path, run: Run) -> None:
    proc = transferlab("evaluate", "run", "--data", "data", "--out", "eval", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert "held-out test split" in proc.stdout
    assert all(c in proc.stdout for c in CLASSES)
    again = json.loads((workdir / "eval" / "metrics.json").read_text(encoding="utf-8"))
    trained = run.json("metrics.json")
    assert again["confusion_matrix"] == trained["confusion_matrix"]
    assert again["accuracy"] == trained["accuracy"]


@pytest.mark.slow
def test_predict_json(workdir: Path, run: Run) -> None:
    images = [
        f"data/apse/{AWKWARD_NAME}",
        *[f"data/{c}/{p.name}" for c in CLASSES for p in example_photos(c, 1)],
    ]
    proc = transferlab("predict", "run", *images, "--json", "--top-k", "2", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [p["path"] for p in doc["predictions"]] == images
    for p in doc["predictions"]:
        top = p["top_k"]
        assert len(top) == 2
        assert p["label"] == top[0]["label"]
        assert {t["label"] for t in top} <= set(CLASSES)
        assert 1.0 >= top[0]["probability"] >= top[1]["probability"] > 0.0
        assert top[0]["probability"] + top[1]["probability"] <= 1.0 + 1e-6


@pytest.mark.slow
def test_predict_text_all_classes(run: Run, dataset: Dataset) -> None:
    # --top-k larger than the number of classes shows every class; they sum to 1.
    code, out, err = invoke("predict", run.path, dataset.root / "apse", "--top-k", "5")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 9
    assert any(AWKWARD_NAME in ln for ln in lines)
    for line in lines:
        ranked = line.split()[-6:]  # label p label p label p
        assert sorted(ranked[0::2]) == sorted(CLASSES)
        assert sum(map(float, ranked[1::2])) == pytest.approx(1.0, abs=0.003)


@pytest.mark.slow
def test_predict_text_separates_path_and_classes_by_a_tab(run: Run, dataset: Dataset) -> None:
    code, out, _ = invoke("predict", run.path, dataset.root / "apse" / AWKWARD_NAME)
    assert code == 0
    path, ranked = out.rstrip("\n").split("\t")
    assert path == str(dataset.root / "apse" / AWKWARD_NAME)
    assert ranked.split()[0] in CLASSES


@pytest.mark.slow
def test_predict_reports_unreadable_images_and_still_predicts_the_rest(
    run: Run, dataset: Dataset
) -> None:
    code, out, err = invoke("predict", run.path, dataset.root / "altar")
    assert code == 3  # some files unreadable (predict --help, exit codes)
    assert len(out.strip().splitlines()) == 8
    for name in dataset.bad[:3]:  # notes.txt is not an image and is not picked up
        assert name in err


# --- errors, help -----------------------------------------------------------------------


def test_log_lines_after_a_command_reach_the_stderr_of_the_moment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command run in-process (a notebook, a test runner) swaps sys.stderr and closes its
    stream afterwards; the process's later log lines must still be written, not fail with
    "--- Logging error ---"."""
    code, _, stderr = invoke("report", tmp_path / "nowhere")
    assert code == 2 and "error:" in stderr
    logging.getLogger("transferlab.test").warning("after the command")
    err = capsys.readouterr().err
    assert "warning: after the command" in err and "Logging error" not in err


@pytest.fixture
def one_class(tmp_path: Path) -> Path:
    copy_photos("apse", tmp_path / "solo" / "apse", 4)
    return tmp_path / "solo"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "{tmp}/nowhere", "--out", "{tmp}/o"], "data path not found"),
        (["train", "{one_class}", "--out", "{tmp}/o"], "only one class ('apse')"),
        (["train", "{one_class}", "--out", "{tmp}/o", "--val-fraction", "1.5"], "--val-fraction"),
        (["predict", "{tmp}", "{one_class}", "--top-k", "0"], "--top-k must be at least 1"),
        (["predict", "{tmp}", "{one_class}"], "has no model.json"),
        (["evaluate", "{tmp}/nowhere", "--data", "{one_class}"], "model not found"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    tmp_path: Path, one_class: Path, args: list[str], message: str
) -> None:
    code, _, err = invoke(*[a.format(tmp=tmp_path, one_class=one_class) for a in args])
    assert code == 2
    assert err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_training_into_an_existing_run_is_refused(run: Run, dataset: Dataset) -> None:
    code, _, err = invoke("train", dataset.root, "--out", run.path, *FAST)
    assert code == 2
    assert "already holds a run" in err


@pytest.mark.slow
def test_hub_only_weights_offline_fail_in_one_line(workdir: Path, dataset: Dataset) -> None:
    proc = transferlab(
        "train", "data", "--out", "hub", "--model", "resnet18", *FAST,
        cwd=workdir, HF_HOME=str(workdir / "empty-hf-home"),
    )  # fmt: skip
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert "cannot download ImageNet weights for 'resnet18'" in errors[0]
    assert "tf_efficientnet_lite0" in errors[0]
    assert "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = transferlab("train", "nowhere", "--out", "o", "--debug", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "DatasetError: data path not found" in proc.stderr


COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "command",
    COMMANDS,
)
def test_every_command_help_has_examples(command: str) -> None:
    code, out, _ = invoke(command, "--help")
    assert code == 0
    assert "Examples" in out
    assert f"transferlab {command}" in out


def test_the_core_commands_exist() -> None:
    assert {"train", "evaluate", "predict", "models"} <= set(COMMANDS)


# --- typed configuration, --set and value checks ----------------------------------------

# A CNN without ImageNet weights trained from scratch at 64 px: the quickest real run.
SCRATCH = ["--model", "convnet1", "--weights", "none", "--strategy", "scratch"]
TINY_RUN = ["--image-size", "64", "--epochs", "1", "--head-epochs", "1", "--batch-size", "8"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 4 real photos."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    for label in CLASSES:
        copy_photos(label, root / label, 4)
    return root


def one_error_line(code: int, err: str) -> str:
    """Exit 2 and exactly one ``error:`` line, not a crash."""
    assert code == 2, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, err
    assert "unexpected" not in err and "Traceback" not in err
    return errors[0]


def train_error(tmp_path: Path, data: Path, *args: str, yaml_text: str | None = None) -> str:
    extra: list[str] = []
    if yaml_text is not None:
        (tmp_path / "config.yaml").write_text(yaml_text, encoding="utf-8")
        extra = ["--config", str(tmp_path / "config.yaml")]
    code, _, err = invoke("train", data, "--out", tmp_path / "run", *extra, *args, *CPU_SEED)
    return one_error_line(code, err)


@pytest.mark.parametrize(
    ("yaml_text", "names"),
    [
        ("train: {lr: fast}\n", ["train.lr", "'fast'", "float"]),
        ("train: {epochs: 2.5}\n", ["train.epochs", "2.5", "int"]),
        ("train: {epochs: true}\n", ["train.epochs", "True", "int"]),
        ("foo: {bar: 1}\n", ["'foo'", "data, model, train"]),
        ("train: {foo: 1}\n", ["train.foo", "head_epochs"]),
    ],
)
def test_config_yaml_of_the_wrong_type_is_one_line(
    tmp_path: Path, tiny: Path, yaml_text: str, names: list[str]
) -> None:
    line = train_error(tmp_path, tiny, *SCRATCH, *TINY_RUN, yaml_text=yaml_text)
    assert all(n in line for n in names), line


@pytest.mark.parametrize(
    ("augment", "key"),
    [
        ("{randaugment: 2, randaugment_magnitude: 99}", "augment.randaugment_magnitude"),
        ("{scale_min: 5}", "augment.scale_min"),
        ("{randaugment: -1}", "augment.randaugment"),
        ("{mixup: -3}", "augment.mixup"),
        ("{cutmix: -1}", "augment.cutmix"),
        ("{hflip: 7}", "augment.hflip"),
        ("{rotation: -400}", "augment.rotation"),
        ("{color_jitter: -2}", "augment.color_jitter"),
    ],
)
def test_augment_values_out_of_range_are_one_line(
    tmp_path: Path, tiny: Path, augment: str, key: str
) -> None:
    line = train_error(tmp_path, tiny, *SCRATCH, *TINY_RUN, yaml_text=f"augment: {augment}\n")
    assert key in line and "out of range" in line, line


def test_unknown_model_kwargs_name_the_key(tmp_path: Path, tiny: Path) -> None:
    line = train_error(tmp_path, tiny, *TINY_RUN, "--set", "model.kwargs.bogus=3")
    assert "model.kwargs" in line and "bogus" in line and "tf_efficientnet_lite0" in line


def test_bad_model_kwargs_values_name_the_key(tmp_path: Path, tiny: Path) -> None:
    yaml_text = "model: {name: alexnet, weights: none, kwargs: {stride: 0}}\n"
    line = train_error(tmp_path, tiny, *TINY_RUN, yaml_text=yaml_text)
    assert "model.kwargs" in line and "stride" in line, line


def test_trainable_groups_errors_name_the_same_range(tmp_path: Path, tiny: Path) -> None:
    top_n = [*SCRATCH[:4], "--strategy", "top-n", *TINY_RUN]
    zero = train_error(tmp_path, tiny, *top_n, "--trainable-groups", "0")
    too_many = train_error(tmp_path, tiny, *top_n, "--trainable-groups", "99")
    assert "--trainable-groups" in zero and ">= 1" in zero, zero
    assert "--trainable-groups 99" in too_many and "use 1..2" in too_many, too_many


def test_milestones_error_shows_a_milestones_example(tmp_path: Path, tiny: Path) -> None:
    line = train_error(
        tmp_path, tiny, *SCRATCH, *TINY_RUN, "--scheduler", "multistep", "--milestones", "5,x"
    )
    assert "--milestones" in line and "10,20" in line and "1024,512" not in line, line


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--scheduler", "multistep"], ["--scheduler multistep", "--milestones"]),
        (["--hidden-units", "64"], ["--hidden-units", "--head mlp"]),
        (["--head", "mlp", "--hidden-units", ""], ["--head mlp", "--hidden-units"]),
    ],
)
def test_settings_that_would_do_nothing_are_errors(
    tmp_path: Path, tiny: Path, args: list[str], names: list[str]
) -> None:
    line = train_error(tmp_path, tiny, *SCRATCH, *TINY_RUN, *args)
    assert all(n in line for n in names), line


def test_a_custom_cnn_without_weights_none_says_how(tmp_path: Path, tiny: Path) -> None:
    line = train_error(tmp_path, tiny, "--model", "convnet1", *TINY_RUN)
    assert "--weights none" in line and "--strategy scratch" in line, line
    assert "timm has no" not in line


def _labels_csv(folder: Path, header: str, split: str | None) -> Path:
    rows = [header]
    for label in CLASSES:
        for photo in copy_photos(label, folder / label, 4):
            rel = photo.relative_to(folder).as_posix()
            rows.append(f'"{rel}",{label}' + (f",{split}" if split else ""))
    path = folder / "labels.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_a_csv_split_column_without_val_rows_says_so(tmp_path: Path) -> None:
    csv_file = _labels_csv(tmp_path / "csv", "path,label,split", "train")
    line = train_error(tmp_path, csv_file, *SCRATCH, *TINY_RUN)
    assert "split" in line and "val" in line and "val/ folder" not in line, line


def test_a_csv_with_other_column_names_says_which_are_expected(tmp_path: Path) -> None:
    csv_file = _labels_csv(tmp_path / "csv", "file,class", None)
    line = train_error(tmp_path, csv_file, *SCRATCH, *TINY_RUN)
    assert "path" in line and "label" in line and "'file'" in line, line


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--set", "train.lr=fast"], ["train.lr", "'fast'"]),
        (["--set", "train.foo=1"], ["train.foo"]),
        (["--set", "nonsense"], ["--set", "section.key=value"]),
        (["--set", "augment.mixup=-3"], ["augment.mixup", "out of range"]),
        (["--layer-decay", "1.5"], ["--layer-decay", "train.layer_decay"]),
        (["--min-delta", "-1"], ["--min-delta", "train.min_delta"]),
        (["--val-fraction", "1.5"], ["--val-fraction", "data.val_fraction"]),
    ],
)
def test_set_and_flags_are_checked_like_yaml(
    tmp_path: Path, tiny: Path, args: list[str], names: list[str]
) -> None:
    line = train_error(tmp_path, tiny, *SCRATCH, *TINY_RUN, *args)
    assert all(n in line for n in names), line


def test_lr_find_takes_set(tmp_path: Path, tiny: Path) -> None:
    code, _, err = invoke(
        "lr-find", tiny, *SCRATCH[:4], "--out", tmp_path / "lr", "--set", "augment.mixup=-3"
    )
    assert "augment.mixup" in one_error_line(code, err)


def test_train_help_shows_set_examples_and_the_new_options() -> None:
    code, out, _ = invoke("train", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for text in ("--set", "train.label_smoothing=0.05", "--head-epochs", "--layer-decay"):
        assert text in flat, text
    assert "--min-delta" in flat and "Precedence" in flat
    assert "--warmup-epochs" not in flat  # the old name still works, hidden


@pytest.mark.slow
def test_precedence_yaml_then_set_then_flags(tmp_path: Path, tiny: Path) -> None:
    config = tmp_path / "base.yaml"
    config.write_text(
        "train: {epochs: 5, batch_size: 4, lr: 1e-3}\nmodel: {image_size: 96}\n", encoding="utf-8"
    )
    proc = transferlab(
        "train", tiny, "--out", "run", *SCRATCH, "--config", config,
        "--set", "train.epochs=3", "--set", "train.batch_size=6", "--set", "model.image_size=64",
        "--epochs", "1", "--warmup-epochs", "2", "--layer-decay", "0.8", "--min-delta", "0.01",
        *CPU_SEED, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["train"]["epochs"] == 1  # flag over --set over YAML
    assert cfg["train"]["batch_size"] == 6  # --set over YAML
    assert cfg["train"]["lr"] == 0.001  # YAML's 1e-3, a number
    assert cfg["model"]["image_size"] == 64
    assert cfg["train"]["head_epochs"] == 2  # the old --warmup-epochs name
    assert (cfg["train"]["layer_decay"], cfg["train"]["min_delta"]) == (0.8, 0.01)
    renamed = [ln for ln in proc.stderr.splitlines() if "--warmup-epochs" in ln]
    assert len(renamed) == 1 and "--head-epochs" in renamed[0], proc.stderr


def test_resume_refuses_settings_it_would_ignore(tmp_path: Path) -> None:
    code, _, err = invoke("train", "--resume", tmp_path, "--lr", "0.1")
    assert "--resume continues a run with its own config.yaml" in one_error_line(code, err)


def test_the_top_level_help_states_the_exit_codes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "transferlab", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "Exit codes: 0 done; 2 a problem with the input" in text
    assert "1 an unexpected crash" in text and "3 predict/crop" in text
