"""Model-quality metrics as plain functions (the tests use them as the expected values too).

>>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
0.75
>>> round(logloss([1, 0], [0.9, 0.2]), 4)
0.1643
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def auc(labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN when one class is missing."""
    y = np.asarray(labels, dtype=np.float64) > 0.5
    s = np.asarray(scores, dtype=np.float64)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_scores = s[order]
    # Average ranks over ties.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    average = (starts + ends + 1) / 2.0  # 1-based mean rank of each tie group
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[y].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def logloss(labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Mean binary cross-entropy (probabilities clipped to [1e-7, 1 − 1e-7])."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    if len(y) == 0:
        return math.nan
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def quality(
    click: np.ndarray, conversion: np.ndarray, p_ctr: np.ndarray, p_ctcvr: np.ndarray
) -> dict[str, float]:
    """The manifest's metrics: AUC and logloss of pCTR on clicks and pCTCVR on click·conv."""
    ctcvr = click * conversion
    return {
        "auc_ctr": auc(click, p_ctr),
        "auc_ctcvr": auc(ctcvr, p_ctcvr),
        "logloss_ctr": logloss(click, p_ctr),
        "logloss_ctcvr": logloss(ctcvr, p_ctcvr),
        "samples": float(len(click)),
    }
