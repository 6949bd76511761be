"""'I don't know': --reject-below for predict, serve (a real server) and stream, the bundle's
default threshold (``transferlab reject-below``), and evaluate's risk-coverage curve, all
on the really trained tiny run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import invoke
from test_serve import Server, _free_port, _post_file, _wait_until_up
from test_stream import BAND, PER_PHOTO, make_video, read_frames
from trained_model import CLASSES, held_out_photos, trained_run
from transferlab.backends import load_backend
from transferlab.cli import app
from transferlab.evaluate import run_split
from transferlab.predict import predict_files
from transferlab.stream import annotate


@pytest.fixture
def bundle(run: Path, tmp_path: Path) -> Path:
    """A copy of the run's bundle that a test may change."""
    return Path(shutil.copytree(run / "model", tmp_path / "model"))


@pytest.fixture(autouse=True)
def _logging(restore_transferlab_logging: None) -> None:
    """In-process CLI calls reconfigure logging; restore it after each test."""


def predict_json(model: Path, photos: list[Path], *options: object) -> list[dict[str, object]]:
    code, stdout, stderr = invoke("predict", model, *photos, "--json", "-k", 3, *options)
    assert code == 0, stderr
    return list(json.loads(stdout)["predictions"])


def test_predict_answers_unknown_below_p_with_the_top_k_intact(run: Path) -> None:
    photos = [held_out_photos(label, 1)[0] for label in CLASSES]
    plain = predict_json(run, photos)
    assert [p["label"] for p in plain] == list(CLASSES)
    assert not any(p["rejected"] for p in plain)
    # P just above one photo's top probability rejects it and only the less sure ones.
    tops = [p["top_k"][0]["probability"] for p in plain]  # type: ignore[index]
    p_cut = tops[0] + 1e-4
    cut = predict_json(run, photos, "--reject-below", p_cut)
    for before, after, top in zip(plain, cut, tops, strict=True):
        assert after["top_k"] == before["top_k"]  # the top-k is still listed
        assert after["rejected"] is (top < p_cut)
        assert after["label"] == ("unknown" if top < p_cut else before["label"])
    assert cut[0]["label"] == "unknown"


def test_the_python_api_rejects_below_p_for_files_and_in_memory_images(run: Path) -> None:
    import numpy as np
    from PIL import Image

    import transferlab as tl

    model = tl.load(run / "model")
    photo = held_out_photos("altar", 1)[0]
    array = np.asarray(Image.open(photo).convert("RGB"))
    plain = model.predict([photo, array], top_k=2)
    assert [p.rejected for p in plain] == [False, False]
    everything = model.predict([photo, array], top_k=2, reject_below=1.0)
    assert [p.label for p in everything] == ["unknown", "unknown"]
    assert [p.labels for p in everything] == [p.labels for p in plain]  # top-k kept
    with pytest.raises(tl.ConfigError, match="reject-below"):
        model.predict(photo, reject_below=1.5)


def test_predict_text_output_says_unknown_first(run: Path) -> None:
    photo = held_out_photos("altar", 1)[0]
    code, stdout, _ = invoke("predict", run, photo, "--reject-below", 1.0)
    assert code == 0
    path, ranked = stdout.rstrip("\n").split("\t")
    assert path == str(photo) and ranked.startswith("unknown  altar ")


@pytest.mark.parametrize("command", ["predict", "serve", "stream"])
@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan"])
def test_reject_below_outside_0_1_is_one_line_exit_2(run: Path, command: str, value: str) -> None:
    args = {
        "predict": [str(held_out_photos("altar", 1)[0])],
        "serve": ["--port", "0"],
        "stream": ["--source", "0", "--output", "o.mp4"],
    }[command]
    code, _, stderr = invoke(command, run, *args, "--reject-below", value)
    assert code == 2
    assert stderr.startswith(f"error: --reject-below {value}") and "[0, 1]" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_the_bundle_default_threshold_is_set_used_overridden_and_cleared(bundle: Path) -> None:
    photo = held_out_photos("stained_glass", 1)[0]
    code, stdout, stderr = invoke("reject-below", bundle, 1.0)
    assert code == 0, stderr
    assert json.loads((bundle / "model.json").read_text())["reject_below"] == 1.0
    assert str(bundle / "model.json") in stdout
    assert predict_json(bundle, [photo])[0]["label"] == "unknown"
    # --reject-below 0 answers every image whatever the model's default
    assert predict_json(bundle, [photo], "--reject-below", 0)[0]["label"] == "stained_glass"
    assert invoke("reject-below", bundle, "none")[0] == 0
    assert json.loads((bundle / "model.json").read_text())["reject_below"] is None
    assert predict_json(bundle, [photo])[0]["label"] == "stained_glass"


@pytest.mark.parametrize(
    ("value", "message"),
    [("2", "reject-below 2.0 is not a probability"), ("most", "'most' is not a number")],
)
def test_reject_below_command_refuses_what_is_no_probability(
    bundle: Path, value: str, message: str
) -> None:
    before = (bundle / "model.json").read_text()
    code, _, stderr = invoke("reject-below", bundle, value)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert (bundle / "model.json").read_text() == before


def test_reject_below_command_refuses_an_onnx_file(tmp_path: Path) -> None:
    code, _, stderr = invoke("reject-below", tmp_path / "model.onnx", 0.5)
    assert code == 2 and "set the threshold on its bundle and export again" in stderr


def test_a_bundle_from_before_calibration_predicts_as_before(bundle: Path) -> None:
    meta = json.loads((bundle / "model.json").read_text())
    del meta["calibration"], meta["reject_below"]
    (bundle / "model.json").write_text(json.dumps(meta))
    backend = load_backend(bundle)
    assert backend.temperature == 1.0 and backend.reject_below is None
    x = torch.rand(2, 3, backend.preprocessing.input_size, backend.preprocessing.input_size)
    assert torch.equal(backend.calibrated_forward(x), backend.forward(x))
    result = predict_files(backend, [held_out_photos("altar", 1)[0]])[0]
    assert result.label == "altar" and not result.rejected


def test_stream_overlay_says_unknown_below_the_bundle_default(bundle: Path, tmp_path: Path) -> None:
    assert invoke("reject-below", bundle, 1.0)[0] == 0
    source = make_video(tmp_path / "walk.mp4")
    out = tmp_path / "annotated.mp4"
    code, stdout, stderr = invoke("stream", bundle, "--source", source, "--output", out, "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["label_changes"] == [{"frame": 0, "label": "unknown"}]
    frames, originals = read_frames(out), read_frames(source)
    expected = annotate(originals[PER_PHOTO].copy(), "unknown")[:BAND].astype(np.float32)
    for i in (0, PER_PHOTO, 2 * PER_PHOTO):  # one frame of each photo: the same band
        assert np.abs(frames[i][:BAND].astype(np.float32) - expected).mean() < 6
    # --reject-below 0 on the command line answers again, whatever the bundle says
    code, stdout, _ = invoke(
        "stream", bundle, "--source", source, "--output", out, "--json", "--reject-below", 0
    )
    assert [c["label"] for c in json.loads(stdout)["label_changes"]] == list(CLASSES)


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server whose --reject-below 1.0 overrides the bundle's default of 0."""
    base = tmp_path_factory.mktemp("reject-serve")
    model = Path(shutil.copytree(trained_run(tmp_path_factory) / "model", base / "model"))
    assert CliRunner().invoke(app, ["reject-below", str(model), "0"]).exit_code == 0
    port, log = _free_port(), base / "server.log"
    args = [sys.executable, "-m", "transferlab", "serve", str(model), "--port", str(port)]
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [*args, "--reject-below", "1.0"], stdout=fh, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
    srv = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait_until_up(srv)
        yield srv
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "Traceback" not in log.read_text(), log.read_text()


def test_server_answers_unknown_below_p_and_a_request_may_choose_p(strict_server: Server) -> None:
    photo = held_out_photos("dome(outer)", 1)[0]
    body = _post_file(strict_server, photo, top_k=3).json()
    assert body["label"] == "unknown" and body["rejected"] is True
    assert body["top_k"][0]["label"] == "dome(outer)" and len(body["top_k"]) == 3
    answered = _post_file(strict_server, photo, top_k=3, reject_below=0).json()
    assert answered["label"] == "dome(outer)" and answered["rejected"] is False
    assert answered["top_k"] == body["top_k"]
    assert _post_file(strict_server, photo, reject_below=2).status_code == 422
    limits = httpx.get(f"{strict_server.url}/model", timeout=10).json()
    assert limits["limits"]["reject_below"] == 1.0 and limits["reject_below"] == 0.0


def test_evaluate_risk_coverage_lets_the_user_choose_p(run: Path) -> None:
    found = run_split(run)
    assert found is not None
    data = found[0]["data"]["path"]  # the run's own data: evaluate takes its val split
    code, stdout, stderr = invoke("evaluate", run, "--data", data, "--json")
    assert code == 0, stderr
    metrics = json.loads(stdout)
    rows = metrics["risk_coverage"]
    coverage = [r["coverage"] for r in rows]
    assert coverage == sorted(coverage, reverse=True)
    assert rows[0] == {
        "reject_below": 0.0,
        "answered": metrics["num_images"],
        "coverage": 1.0,
        "accuracy": pytest.approx(metrics["accuracy"], abs=1e-6),
    }
    assert 0.0 <= metrics["ece"] <= 1.0
    # predict --reject-below P answers exactly the images of the row of P
    photos = [s.path for s in found[1].val]
    tops = [p["top_k"][0]["probability"] for p in predict_json(run, photos)]  # type: ignore[index]
    assert [sum(t >= r["reject_below"] for t in tops) for r in rows] == [
        r["answered"] for r in rows
    ]
    code, text, _ = invoke("evaluate", run, "--data", data)
    assert "--reject-below P -> 0.0: 100% answered, accuracy" in text
