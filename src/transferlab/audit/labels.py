"""Likely label errors: out-of-fold probabilities of a linear probe on backbone features
(scikit-learn), ranked by confident learning (cleanlab's ``find_label_issues``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from cleanlab.filter import find_label_issues
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

MAX_FOLDS = 5
# Above this many images the probe sees 128 principal components, not all the features:
# on the 10,130 AHE photos that is 15 s instead of 67 s on 2 cores, accuracy 0.909 vs 0.916.
PCA_ABOVE, PCA_COMPONENTS = 2000, 128


def folds_for(labels: np.ndarray) -> int:
    """Cross-validation folds the smallest class allows (0: too small for any)."""
    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    folds = min(MAX_FOLDS, smallest)
    return folds if folds >= 2 else 0


def out_of_fold_probs(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each image's class probabilities from a probe that never saw it; labels 0..K-1,
    every class with at least 2 images (see :func:`folds_for`)."""
    folds = folds_for(labels)
    # Unit-length features: on the example photos this ranked a planted mislabelled photo
    # alone, where standardised features also flagged several correct ones.
    steps: list[Any] = [Normalizer()]
    if len(features) > PCA_ABOVE and features.shape[1] > PCA_COMPONENTS:
        steps.append(PCA(PCA_COMPONENTS, random_state=seed))
    probe = make_pipeline(*steps, LogisticRegression(max_iter=300, C=1.0))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    probs: np.ndarray = cross_val_predict(probe, features, labels, cv=cv, method="predict_proba")
    return probs


def ranked_issues(labels: np.ndarray, probs: np.ndarray) -> list[int]:
    """Indices of likely mislabelled images, most likely first."""
    found = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    return [int(i) for i in found]
