"""Class display names: Tiny ImageNet's ``words.txt`` (found by itself) and the flowers'
``cat_to_name.json`` (``--class-names``) name the classes in model.json, predictions,
reports, the served answers and the stream overlay, while folder names stay the keys; a
read-only data folder trains and evaluates and is never written to."""

from __future__ import annotations

import csv
import json
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from helpers import copy_photos, example_photos, invoke
from transferlab.backends import load_backend
from transferlab.bundle import load_bundle
from transferlab.data.class_names import display_names, read_class_names
from transferlab.errors import ConfigError
from transferlab.serve.app import create_app
from transferlab.stream import StreamOptions, annotate, classify_frame, run_stream

# Two real Tiny ImageNet wnids, with photos of two distinct example classes behind them.
WNIDS = {"n01443537": "altar", "n01629819": "dome(outer)"}
NAMES = {"n01443537": "goldfish", "n01629819": "European fire salamander"}
WORDS = (
    "n00001740\tentity\n"
    "n01443537\tgoldfish, Carassius auratus\n"
    "n01629819\tEuropean fire salamander, Salamandra salamandra\n"
    "n09999999\tsomething this data does not have\n"
)
SCRATCH = ["--model", "convnet1", "--weights", "none", "--strategy", "scratch"]
TINY_RUN = ["--image-size", "64", "--epochs", "1", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _logging(restore_transferlab_logging: None) -> None:
    """In-process CLI calls reconfigure logging; restore it after each test."""


def tiny_imagenet(root: Path) -> Path:
    """The Tiny ImageNet layout: train/<wnid>/images, val/images + val_annotations.txt,
    wnids.txt and words.txt at the root."""
    lines = []
    for wnid, label in WNIDS.items():
        copy_photos(label, root / "train" / wnid / "images", 8)
        for photo in copy_photos(label, root / "val" / "images", 3, offset=8):
            lines.append(f"{photo.name}\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n", encoding="utf-8")
    (root / "words.txt").write_text(WORDS, encoding="utf-8")
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``root`` with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def set_read_only(root: Path, read_only: bool) -> None:
    for p in [root, *root.rglob("*")]:
        mode = p.stat().st_mode
        write = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        p.chmod(mode & ~write if read_only else mode | stat.S_IWUSR)


class Trained:
    def __init__(self, data: Path, run: Path, before: dict[str, tuple[int, int]]) -> None:
        self.data, self.run, self.before = data, run, before


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A scratch convnet1 run on read-only Tiny ImageNet data (words.txt beside it)."""
    base = tmp_path_factory.mktemp("tiny-imagenet")
    data = tiny_imagenet(base / "data")
    set_read_only(data, True)
    before = snapshot(data)
    code, _, err = invoke("train", data, "--out", base / "run", *SCRATCH, *TINY_RUN)
    assert code == 0, err
    return Trained(data, base / "run", before)


# --- reading the files --------------------------------------------------------------------


def test_words_txt_gives_the_first_synonym_of_each_wnid(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text(WORDS, encoding="utf-8")
    names = read_class_names(words)
    assert names["n01443537"] == "goldfish" and names["n00001740"] == "entity"
    assert display_names(sorted(WNIDS), names, words) == [NAMES[w] for w in sorted(WNIDS)]


def test_cat_to_name_json_maps_folders_and_unnamed_folders_keep_their_name(
    tmp_path: Path,
) -> None:
    cat = tmp_path / "cat_to_name.json"
    cat.write_text(json.dumps({"21": "fire lily", "3": "canterbury bells"}), encoding="utf-8")
    assert display_names(["21", "3", "99"], read_class_names(cat), cat) == [
        "fire lily",
        "canterbury bells",
        "99",
    ]


def test_a_name_two_classes_share_gets_the_folder_name(tmp_path: Path) -> None:
    cat = tmp_path / "names.json"
    cat.write_text(json.dumps({"1": "rose", "2": "rose", "3": "lily"}), encoding="utf-8")
    assert display_names(["1", "2", "3"], read_class_names(cat), cat) == [
        "rose (1)",
        "rose (2)",
        "lily",
    ]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "file not found"),
        ('{"21": "fire lily",', "not valid JSON (line 1"),
        ('["fire lily"]', "is a list, not an object"),
        ('{"21": ""}', "the name of '21' is ''"),
        ('{"21": 7}', "the name of '21' is 7"),
        ("n01443537\n", "line 1: 'n01443537' is not 'folder<TAB>name'"),
        ("", "names no classes"),
        ('{"a": "x", "b": "y"}', "names none of the 2 classes (e.g. 'n01443537')"),
    ],
)
def test_a_bad_names_file_is_a_one_line_error_naming_it(
    tmp_path: Path, content: str | None, says: str
) -> None:
    path = tmp_path / ("names.txt" if content and content[0] == "n" else "names.json")
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        display_names(sorted(WNIDS), read_class_names(path), path)
    message = str(caught.value)
    assert says in message and str(path) in message and "--class-names" in message
    assert "\n" not in message


# --- a run on read-only Tiny ImageNet data --------------------------------------------------


def test_the_data_folder_is_never_written_to(trained: Trained) -> None:
    code, _, err = invoke("evaluate", trained.run, "--data", trained.data)
    assert code == 0, err
    assert snapshot(trained.data) == trained.before


def test_evaluate_writes_display_names_into_its_predictions(
    trained: Trained, tmp_path: Path
) -> None:
    code, _, err = invoke("evaluate", trained.run, "--data", trained.data, "--out", tmp_path / "e")
    assert code == 0, err
    with (tmp_path / "e" / "predictions.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(NAMES[r["predicted"]] == r["predicted_name"] for r in rows)


def test_model_json_holds_display_names_and_folder_names_stay_the_keys(trained: Trained) -> None:
    meta = json.loads((trained.run / "model" / "model.json").read_text(encoding="utf-8"))
    assert meta["class_names"] == sorted(WNIDS)
    assert meta["display_names"] == [NAMES[w] for w in sorted(WNIDS)]
    assert load_bundle(trained.run).display_names == meta["display_names"]
    with (trained.run / "split.csv").open(encoding="utf-8") as fh:
        assert {r["label"] for r in csv.DictReader(fh)} == set(WNIDS)
    with (trained.run / "predictions.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(NAMES[r["predicted"]] == r["predicted_name"] for r in rows)
    metrics = json.loads((trained.run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["display_names"] == meta["display_names"]


def test_the_report_shows_display_names(trained: Trained) -> None:
    html = (trained.run / "report.html").read_text(encoding="utf-8")
    assert "goldfish" in html and "European fire salamander" in html


def test_predict_shows_display_names_and_keeps_labels_in_json(trained: Trained) -> None:
    photo = next((trained.data / "val" / "images").iterdir())
    code, out, err = invoke("predict", trained.run, photo, "--top-k", "2")
    assert code == 0, err
    assert "goldfish" in out and "European fire salamander" in out and "n0144" not in out
    code, out, err = invoke("predict", trained.run, photo, "--top-k", "2", "--json")
    assert code == 0, err
    (pred,) = json.loads(out)["predictions"]
    assert pred["label"] in WNIDS and pred["display"] == NAMES[pred["label"]]
    assert {(t["label"], t["display"]) for t in pred["top_k"]} == set(NAMES.items())


def test_the_server_answers_with_display_names(trained: Trained) -> None:
    backend = load_backend(trained.run)
    photo = example_photos("altar", 1)[0]
    with TestClient(create_app(backend)) as client:
        answer = client.post("/predict", content=photo.read_bytes()).json()
        model = client.get("/model").json()
    assert answer["label"] in WNIDS and answer["display"] == NAMES[answer["label"]]
    assert [t["display"] for t in answer["top_k"]] == [NAMES[t["label"]] for t in answer["top_k"]]
    assert model["display_names"] == [NAMES[w] for w in sorted(WNIDS)]


def test_the_stream_overlay_draws_the_display_name(trained: Trained, tmp_path: Path) -> None:
    import cv2

    backend = load_backend(trained.run)
    frame = np.ascontiguousarray(
        np.asarray(Image.open(example_photos("altar", 1)[0]).convert("RGB").resize((320, 240)))[
            :, :, ::-1
        ]
    )
    source = tmp_path / "still.avi"  # MJPG at high quality: the frames come back nearly as drawn
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (320, 240))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    out = tmp_path / "out.avi"
    run_stream(backend, str(source), StreamOptions(output=out))
    capture = cv2.VideoCapture(str(out))
    ok, drawn = capture.read()
    capture.release()
    assert ok
    original = cv2.VideoCapture(str(source)).read()[1]
    probs = classify_frame(backend, original)
    best = int(probs.argmax())
    percent = f"{float(probs[best]) * 100:.0f}%"
    band = max(24, 240 // 9)

    def expected(name: str) -> np.ndarray:
        return annotate(original.copy(), f"{name}  {percent}")[:band].astype(np.float32)

    shown = drawn[:band].astype(np.float32)
    with_display = np.abs(shown - expected(NAMES[sorted(WNIDS)[best]])).mean()
    with_folder = np.abs(shown - expected(sorted(WNIDS)[best])).mean()
    assert with_display < with_folder / 2


def test_old_bundles_show_their_folder_names(trained: Trained, tmp_path: Path) -> None:
    old = tmp_path / "old-model"
    shutil.copytree(trained.run / "model", old)
    meta_file = old / "model.json"
    meta_file.chmod(0o644)
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    del meta["display_names"]
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    assert load_bundle(old).display_names == sorted(WNIDS)
    code, out, err = invoke("predict", old, example_photos("altar", 1)[0])
    assert code == 0, err
    assert "n01443537" in out and "goldfish" not in out


# --- --class-names on the command line ------------------------------------------------------


def test_class_names_option_names_flowers_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "flowers"
    for folder, label in (("21", "altar"), ("3", "dome(outer)")):
        copy_photos(label, data / folder, 6)
    cat = tmp_path / "cat_to_name.json"
    cat.write_text(json.dumps({"21": "fire lily", "3": "canterbury bells"}), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # a relative --class-names is kept by its absolute path
    code, _, err = invoke(
        "train", data, "--out", tmp_path / "run", "--class-names", "cat_to_name.json",
        *SCRATCH, *TINY_RUN, "--set", "data.test_fraction=0",
    )  # fmt: skip
    assert code == 0, err
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text(encoding="utf-8"))
    assert meta["class_names"] == ["21", "3"]
    assert meta["display_names"] == ["fire lily", "canterbury bells"]
    assert meta["config"]["data"]["class_names"] == str(cat.resolve())


@pytest.mark.parametrize(
    ("names", "says"),
    [
        ("missing.json", "missing.json: file not found; check the path"),
        ("other.json", "names none of the 2 classes"),
    ],
)
def test_a_bad_class_names_option_fails_before_the_run_folder_exists(
    tmp_path: Path, names: str, says: str
) -> None:
    data = tmp_path / "data"
    for label in ("altar", "apse"):
        copy_photos(label, data / label, 3)
    (tmp_path / "other.json").write_text('{"x": "y"}', encoding="utf-8")
    code, _, err = invoke(
        "train", data, "--out", tmp_path / "run", "--class-names", tmp_path / names, *SCRATCH,
        *TINY_RUN,
    )  # fmt: skip
    assert code == 2
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert says in line and "--class-names" in line
    # nothing is written (make_loggers may leave the empty --out folder)
    assert "Traceback" not in err and not any((tmp_path / "run").glob("**/*"))


def test_the_leaderboard_heads_its_per_class_table_with_display_names(
    trained: Trained, tmp_path: Path
) -> None:
    from transferlab.report.leaderboard import build_board, render_html, render_markdown

    shutil.copytree(trained.run, tmp_path / "exp" / "scratch-convnet1")
    board = build_board(tmp_path / "exp")
    assert board.classes == sorted(WNIDS)  # the keys (and the CSV's f1_ columns) stay
    header = next(line for line in render_markdown(board).splitlines() if "goldfish" in line)
    assert "European fire salamander" in header and "n01443537" not in header
    assert "goldfish" in render_html(board)


def test_a_run_keeps_the_names_file_by_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resolve_config is the form config.yaml holds and compare's re-launch compares with:
    a relative --class-names there must match the saved, absolute one."""
    from transferlab.config import from_dict
    from transferlab.setup import resolve_config

    monkeypatch.chdir(tmp_path)
    cfg = from_dict({}, {"data.path": "data", "data.class_names": "cat_to_name.json"})
    resolved = resolve_config(cfg).data.class_names
    assert resolved == str((tmp_path / "cat_to_name.json").resolve())
