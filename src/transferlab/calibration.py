"""How far to trust a confidence: temperature scaling, ECE, reliability bins, risk-coverage.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar ``T`` fitted on
the validation split by minimising the negative log-likelihood; it never changes which
class is on top, only how sure the model says it is. It is written here because it is a
dozen lines of torch and no well-kept library offers it without heavy dependencies
(netcal, the package for it, pulls in pyro-ppl and tikzplotlib; torchmetrics only
measures calibration). ECE and the reliability bins are the report's own
(:func:`transferlab.report.stats.calibration`).

A threshold ``P`` on the top probability turns a prediction below it into ``unknown``
(:func:`is_rejected`); :func:`risk_coverage` says, for each ``P``, how many images keep
an answer (coverage) and how often that answer is right, so a user can choose ``P``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F

from transferlab.errors import ConfigError
from transferlab.report.stats import Calibration, calibration

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"  # the answer below the reject threshold
ECE_BINS = 15  # the usual choice (Guo et al.) and the report's default
TEMPERATURE_RANGE = (0.05, 20.0)  # outside it the fit is degenerate (e.g. a perfect val set)


def check_reject_below(value: float | None, where: str = "--reject-below") -> float | None:
    """``value`` when it is a probability in [0, 1] (or None), else a one-line ConfigError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} {value!r} is not a number; give a probability in [0, 1]")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{where} {value} is not a probability; give a number in [0, 1]")
    return float(value)


def is_rejected(top_probability: float, reject_below: float | None) -> bool:
    """Whether a prediction whose best class has ``top_probability`` is answered unknown."""
    return reject_below is not None and top_probability < reject_below


def apply_temperature(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax probabilities -> those of the logits divided by ``temperature``.

    softmax(z / T) = softmax(log softmax(z) / T): the same for any backend, including ONNX
    exports whose output already is a softmax.
    """
    if temperature == 1.0:
        return probs
    logp = probs.float().clamp_min(torch.finfo(torch.float32).tiny).log()
    return (logp / temperature).softmax(dim=-1)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, steps: int = 50) -> float:
    """The ``T`` minimising the NLL of ``softmax(logits / T)``; 1.0 when there is no data.

    LBFGS on log T keeps T positive without a constraint. When every image is classified
    right, the NLL falls all the way to T -> 0 (certainty): that says nothing about the
    images to come, so T stays 1 (typical of small validation splits).
    """
    if len(logits) == 0 or not has_errors(logits, targets):
        return 1.0
    # a clone: logits made under torch.inference_mode cannot take part in autograd
    logits, targets = logits.detach().float().clone(), targets.detach().long()
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    low, high = TEMPERATURE_RANGE
    value = float(log_t.detach().exp())
    if not math.isfinite(value):
        return 1.0
    return min(max(value, low), high)


def has_errors(logits: torch.Tensor, targets: torch.Tensor) -> bool:
    """Whether any image's top class is wrong (else temperature scaling is degenerate)."""
    return bool((logits.argmax(dim=1) != targets.long()).any())


def nll(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean negative log-likelihood of the true classes."""
    picked = probs.float().gather(1, targets.long().view(-1, 1)).clamp_min(1e-12)
    return float(-picked.log().mean())


def reliability(probs: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> Calibration:
    """Reliability bins and the expected calibration error (ECE) of ``probs`` (N, C): the
    report's own equal-width binning, so metrics.json and report.html give the same ECE."""
    confidence, predicted = probs.float().max(dim=1)
    correct = (predicted == targets.long()).tolist()
    return calibration(confidence.double().tolist(), correct, bins)


def calibration_summary(
    val_logits: torch.Tensor,
    val_targets: torch.Tensor,
    eval_probs: torch.Tensor,
    eval_targets: torch.Tensor,
    eval_split: str,
) -> dict[str, Any]:
    """Fit T on the validation logits; NLL, ECE and reliability bins before and after,
    measured on the probabilities of ``eval_split`` (the test split when it has one)."""
    temperature = fit_temperature(val_logits, val_targets)
    degenerate = len(val_logits) == 0 or not has_errors(val_logits, val_targets)
    before = eval_probs.float()
    after = apply_temperature(before, temperature)
    before_bins, after_bins = reliability(before, eval_targets), reliability(after, eval_targets)
    return {
        "temperature": round(temperature, 6),
        "fitted_on": "val",
        "fitted_images": len(val_logits),
        # why T is 1 when it was not fitted: no val images, or none of them wrong
        "fitted": not degenerate,
        "measured_on": eval_split,
        "nll_before": round(nll(before, eval_targets), 6),
        "nll_after": round(nll(after, eval_targets), 6),
        "ece_before": before_bins.ece,
        "ece_after": after_bins.ece,
        "before": before_bins.to_dict(),
        "after": after_bins.to_dict(),
    }


def risk_coverage(
    probs: torch.Tensor, targets: torch.Tensor, steps: int = 20
) -> list[dict[str, float | int | None]]:
    """For thresholds 0, 1/steps, ..., 1 on the top probability: how many images keep an
    answer (their share is the coverage) and the accuracy on those (None when none is kept).
    At threshold 0 the coverage is 1 and the accuracy is the plain accuracy."""
    confidence, predicted = probs.float().max(dim=1)
    correct = predicted == targets.long()
    rows: list[dict[str, float | int | None]] = []
    for i in range(steps + 1):
        threshold = i / steps
        kept = confidence >= threshold
        n = int(kept.sum())
        rows.append(
            {
                "reject_below": round(threshold, 6),
                "answered": n,
                "coverage": round(n / max(1, len(probs)), 6),
                "accuracy": round(float(correct[kept].float().mean()), 6) if n else None,
            }
        )
    return rows
