"""Temperature scaling and calibration error: hand-made cases, synthetic logits whose
calibration is known, and a really trained run (its val logits, metrics.json, bundle)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from trained_model import CLASSES, held_out_photos
from transferlab.backends import load_backend
from transferlab.bundle import load_bundle, save_bundle
from transferlab.calibration import (
    apply_temperature,
    fit_temperature,
    nll,
    reliability,
    risk_coverage,
)
from transferlab.config import from_dict
from transferlab.data.discover import Sample
from transferlab.data.images import load_image
from transferlab.data.store import decode_all
from transferlab.data.transforms import to_base
from transferlab.engine import predict_logits
from transferlab.models.registry import create_model, resolve_preprocessing
from transferlab.pipeline import train_run

HELD_OUT = 20  # example photos per class beyond the ones the tiny run trained on


def _sampled(logits: torch.Tensor, seed: int) -> torch.Tensor:
    """Labels drawn from softmax(logits): those logits are calibrated by construction."""
    gen = torch.Generator().manual_seed(seed)
    return torch.multinomial(logits.softmax(1), 1, generator=gen).squeeze(1)


def test_ece_of_a_hand_made_case() -> None:
    # Four images at confidence 0.85 (3 right) and two at 0.65 (both right), 10 bins:
    # |0.75 - 0.85| * 4/6 + |1.0 - 0.65| * 2/6 = 0.0667 + 0.1167 = 0.1833
    probs = torch.tensor([[0.85, 0.15]] * 4 + [[0.35, 0.65]] * 2)
    targets = torch.tensor([0, 0, 0, 1, 1, 1])
    rel = reliability(probs, targets, bins=10)
    assert rel.ece == pytest.approx(0.1 * 4 / 6 + 0.35 * 2 / 6, abs=1e-6)
    assert rel.counts[8] == 4 and rel.counts[6] == 2 and sum(rel.counts) == 6
    assert rel.accuracy[8] == pytest.approx(0.75) and rel.confidence[6] == pytest.approx(0.65)
    assert rel.accuracy[0] is None  # empty bins say so, not 0


def test_confidence_of_one_falls_in_the_last_bin() -> None:
    rel = reliability(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), bins=10)
    assert rel.counts[-1] == 1 and rel.ece == 0.0


def test_temperature_is_one_on_calibrated_logits() -> None:
    logits = torch.randn(20000, 5, generator=torch.Generator().manual_seed(0)) * 2
    assert fit_temperature(logits, _sampled(logits, 1)) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("scale", [3.0, 0.4])
def test_temperature_undoes_over_and_under_confidence(scale: float) -> None:
    # Labels follow softmax(z); the model reports z * scale: T should be about scale.
    logits = torch.randn(20000, 5, generator=torch.Generator().manual_seed(2))
    targets = _sampled(logits, 3)
    temperature = fit_temperature(logits * scale, targets)
    assert temperature == pytest.approx(scale, rel=0.1)
    before = nll((logits * scale).softmax(1), targets)
    after = nll((logits * scale / temperature).softmax(1), targets)
    assert after < before
    ece_before = reliability((logits * scale).softmax(1), targets).ece
    assert reliability((logits * scale / temperature).softmax(1), targets).ece < ece_before


def test_temperature_on_probabilities_equals_temperature_on_logits() -> None:
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(4)) * 3
    expected = (logits / 1.7).softmax(1)
    assert torch.allclose(apply_temperature(logits.softmax(1), 1.7), expected, atol=1e-5)
    assert torch.equal(apply_temperature(logits.softmax(1), 1.0), logits.softmax(1))


def test_no_validation_images_means_no_temperature() -> None:
    assert fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 1.0


def test_risk_coverage_is_monotone_and_ends_at_plain_accuracy() -> None:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(500, 4, generator=gen) * 2
    targets = _sampled(logits, 6)
    rows = risk_coverage(logits.softmax(1), targets, steps=20)
    coverage = [r["coverage"] for r in rows]
    assert coverage == sorted(coverage, reverse=True)  # a higher threshold answers fewer
    assert rows[0]["reject_below"] == 0.0 and rows[0]["coverage"] == 1.0
    plain = float((logits.argmax(1) == targets).float().mean())
    assert rows[0]["accuracy"] == pytest.approx(plain, abs=1e-6)
    assert rows[-1]["reject_below"] == 1.0 and rows[-1]["answered"] == 0
    assert rows[-1]["accuracy"] is None
    # On calibrated logits the confident answers are the better ones.
    answered = [r for r in rows if r["answered"]]
    assert answered[-1]["accuracy"] > answered[0]["accuracy"]  # type: ignore[operator]


def test_no_error_on_the_val_split_leaves_the_temperature_at_one() -> None:
    # All right: the NLL keeps falling as T -> 0, which says nothing about new images.
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert fit_temperature(logits, torch.tensor([0, 1, 0])) == 1.0


def _held_out_logits(run: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The trained model's logits on the 60 example photos it never saw."""
    bundle = load_bundle(run)
    samples = [
        Sample(path, label) for label in CLASSES for path in held_out_photos(label, HELD_OUT)
    ]
    images, skipped = decode_all(samples, bundle.class_names, bundle.preprocessing, 4096)
    assert not skipped
    return predict_logits(bundle.model, images, bundle.preprocessing, 32), images.targets


def test_fitted_temperature_lowers_the_nll_of_real_logits(run: Path) -> None:
    logits, targets = _held_out_logits(run)
    assert (logits.argmax(1) != targets).any()  # some are wrong: the fit is meaningful
    temperature = fit_temperature(logits, targets)
    assert temperature != 1.0
    before, after = logits.softmax(1), (logits / temperature).softmax(1)
    assert nll(after, targets) < nll(before, targets)
    assert torch.equal(after.argmax(1), before.argmax(1))  # the answers stay the same


def test_a_run_records_calibration_before_and_after(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert cal["fitted_on"] == "val" and cal["measured_on"] == metrics["split"]
    assert cal["fitted_images"] == metrics["training"]["images"]["val"]
    assert 0.0 <= cal["ece_after"] <= 1.0 and 0.0 <= cal["ece_before"] <= 1.0
    assert sum(cal["before"]["counts"]) == sum(cal["after"]["counts"]) == metrics["num_images"]
    # T is fitted only when some val image is wrong (here val is also the measured split)
    assert metrics["split"] == "val" and cal["fitted"] is (metrics["accuracy"] < 1.0)
    if not cal["fitted"]:
        assert cal["temperature"] == 1.0 and cal["ece_after"] == cal["ece_before"]
    assert load_bundle(run).meta["calibration"]["temperature"] == cal["temperature"]


def test_backends_apply_the_bundle_temperature(tmp_path: Path) -> None:
    # A small real CNN (random weights): exporting it to ONNX takes a second.
    torch.manual_seed(0)
    model, _ = create_model("convnet1", 3, weights="none")
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        classifier.weight.mul_(200)  # confident logits, as after training
    prep = resolve_preprocessing("convnet1", 64)
    extra = {"calibration": {"temperature": 2.5}}
    bundle_dir = save_bundle(
        tmp_path / "model", model.eval(), "convnet1", list(CLASSES), prep, extra
    )
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model(x)
    assert logits.std() > 0.5  # the temperature visibly changes these probabilities
    expected = (logits / 2.5).softmax(1)
    for name in ("torch", "onnx"):
        backend = load_backend(bundle_dir, name)
        assert backend.temperature == 2.5
        assert torch.allclose(backend.calibrated_forward(x), expected, atol=1e-5), name
        assert torch.allclose(backend.forward(x), logits.softmax(1), atol=1e-5), name


def test_a_run_with_val_errors_fits_t_and_its_report_shows_before_and_after(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    # One head epoch at 64 px on look-alike classes: far from perfect, so T has errors to
    # fit on.
    data = class_folders(per_class=6, classes=("apse", "dome(inner)", "vault", "altar"))
    cfg = from_dict(
        {},
        {
            "data.path": str(data),
            "data.val_fraction": 0.34,
            "data.test_fraction": 0.0,
            "model.image_size": 64,
            "train.epochs": 0,
            "train.head_epochs": 1,
            "train.batch_size": 8,
            "train.device": "cpu",
        },
    )
    run = train_run(cfg, tmp_path / "run").run_dir
    cal = json.loads((run / "metrics.json").read_text())["calibration"]
    assert cal["fitted"] is True and cal["temperature"] != 1.0
    assert cal["nll_after"] < cal["nll_before"]  # fitted and measured on val here
    assert load_bundle(run).meta["calibration"]["temperature"] == cal["temperature"]
    # predictions.csv holds the probabilities the bundle gives (T applied)
    row = next(csv.DictReader((run / "predictions.csv").open()))
    backend = load_backend(run)
    image = to_base(load_image(data / row["path"]), backend.preprocessing)
    assert float(row["confidence"]) == pytest.approx(float(backend.predict(image).max()), abs=1e-3)
    html = (run / "report.html").read_text()
    assert f"T = <b>{cal['temperature']:.3f}</b>" in html
    assert f"ECE <b>{cal['ece_before']:.3f}</b> before" in html
    assert (run / "report" / "reliability_before.png").read_bytes()[:4] == b"\x89PNG"
