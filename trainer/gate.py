"""The validation gate: a candidate is published only when it is sane and no worse.

Pure: it takes the labels of held-out sets and both models' scores on them. Refused when a
weight is not finite, when the candidate's scores are not finite, or when on any set the
candidate's AUC (CTR or CTCVR) is lower than the serving model's by more than ``auc_margin``,
or its logloss higher by more than ``logloss_margin`` — "more than" in the statistical sense:
the difference must also exceed twice its paired-bootstrap standard error, so a quiet night
window of a hundred samples does not refuse a good model on noise. A metric that cannot be
computed (a set with one class only) is skipped.

The label check: the candidate's AUC on the newest window must also not fall below the
serving model's AUC on the earlier windows by more than the margin plus three standard errors
(unpaired bootstrap). A window whose labels are broken — flipped, shifted, joined wrong —
shows up there even when the candidate itself has learned them.

>>> rng = np.random.default_rng(0)
>>> click = (rng.random(4000) < 0.3).astype(float)
>>> good = np.clip(0.3 + 0.4 * (click - 0.3) + rng.normal(0, 0.2, 4000), 0.01, 0.99)
>>> flipped = 1.0 - good
>>> scored = Scored(click, click, (flipped, flipped), (good, good))
>>> decision = gate(True, {"recent": scored}, auc_margin=0.01, logloss_margin=0.02)
>>> decision.accepted, decision.reason.split(" 0.")[0]
(False, 'recent: auc_ctr')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from trainer.metrics import auc, logloss

MAX_BOOTSTRAP_SAMPLES = 20_000


@dataclass(frozen=True)
class Scored:
    """One held-out set: labels, and (pCTR, pCTCVR) of the candidate and of the serving model."""

    click: np.ndarray
    conversion: np.ndarray
    candidate: tuple[np.ndarray, np.ndarray]
    serving: tuple[np.ndarray, np.ndarray] | None


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    reason: str
    candidate: dict[str, dict[str, float]] = field(default_factory=dict)
    serving: dict[str, dict[str, float]] = field(default_factory=dict)


def _metrics(
    click: np.ndarray, ctcvr: np.ndarray, scores: tuple[np.ndarray, np.ndarray]
) -> dict[str, float]:
    return {
        "auc_ctr": auc(click, scores[0]),
        "auc_ctcvr": auc(ctcvr, scores[1]),
        "logloss_ctr": logloss(click, scores[0]),
        "logloss_ctcvr": logloss(ctcvr, scores[1]),
        "samples": float(len(click)),
    }


_LABEL = {"auc_ctr": 0, "auc_ctcvr": 1, "logloss_ctr": 0, "logloss_ctcvr": 1}


def bootstrap_se(
    labels: np.ndarray,
    mine: np.ndarray,
    theirs: np.ndarray | None = None,
    metric: str = "auc",
    rounds: int = 200,
    seed: int = 0,
) -> float:
    """Bootstrap standard error of metric(mine), or with ``theirs`` of the paired difference
    metric(mine) − metric(theirs) on the same resampled rows."""
    function = auc if metric.startswith("auc") else logloss
    rng = np.random.default_rng(seed)
    n = len(labels)
    size = min(n, MAX_BOOTSTRAP_SAMPLES)
    values = []
    for _ in range(rounds):
        index = rng.integers(0, n, size)
        value = function(labels[index], mine[index])
        if theirs is not None:
            value -= function(labels[index], theirs[index])
        values.append(value)
    finite = np.asarray(values)
    finite = finite[np.isfinite(finite)]
    return float(finite.std()) if len(finite) > 1 else math.inf


def label_check(
    newest: Scored, recent: Scored, auc_margin: float, rounds: int = 200, seed: int = 0
) -> str | None:
    """Why the newest window's labels look broken next to the earlier ones, or None."""
    if recent.serving is None:
        return None
    for metric, which in (("auc_ctr", 0), ("auc_ctcvr", 1)):
        new_labels = newest.click if which == 0 else newest.click * newest.conversion
        old_labels = recent.click if which == 0 else recent.click * recent.conversion
        mine = auc(new_labels, newest.candidate[which])
        theirs = auc(old_labels, recent.serving[which])
        if not (math.isfinite(mine) and math.isfinite(theirs)) or mine >= theirs - auc_margin:
            continue
        se = math.hypot(
            bootstrap_se(new_labels, newest.candidate[which], rounds=rounds, seed=seed),
            bootstrap_se(old_labels, recent.serving[which], rounds=rounds, seed=seed),
        )
        if mine < theirs - auc_margin - 3 * se:
            return (
                f"label check: {metric} {mine:.4f} on the newest window < the serving model's "
                f"{theirs:.4f} on the earlier windows - {auc_margin} (se {se:.4f}, "
                f"n={len(newest.click)}): the newest window's labels look broken"
            )
    return None


def gate(
    finite: bool,
    sets: Mapping[str, Scored],
    auc_margin: float,
    logloss_margin: float,
    rounds: int = 200,
    seed: int = 0,
) -> GateDecision:
    candidate: dict[str, dict[str, float]] = {}
    serving: dict[str, dict[str, float]] = {}
    labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, scored in sets.items():
        ctcvr = scored.click * scored.conversion
        labels[name] = (scored.click, ctcvr)
        candidate[name] = _metrics(scored.click, ctcvr, scored.candidate)
        if scored.serving is not None:
            serving[name] = _metrics(scored.click, ctcvr, scored.serving)

    def refuse(reason: str) -> GateDecision:
        return GateDecision(False, reason, candidate, serving)

    if not finite:
        return refuse("the candidate has NaN or infinite weights")
    for name, scored in sets.items():
        if not all(bool(np.isfinite(s).all()) for s in scored.candidate):
            return refuse(f"{name}: the candidate's scores are not finite")
    if not serving:
        return GateDecision(True, "no serving model to compare with", candidate, {})
    if "newest" in sets and "recent" in sets:
        broken = label_check(sets["newest"], sets["recent"], auc_margin, rounds, seed)
        if broken:
            return refuse(broken)
    for name, scored in sets.items():
        if scored.serving is None:
            continue
        for metric in ("auc_ctr", "auc_ctcvr", "logloss_ctr", "logloss_ctcvr"):
            mine, theirs = candidate[name][metric], serving[name][metric]
            if not (math.isfinite(mine) and math.isfinite(theirs)):
                continue
            higher_is_better = metric.startswith("auc")
            margin = auc_margin if higher_is_better else logloss_margin
            worse = (theirs - mine) if higher_is_better else (mine - theirs)
            if worse <= margin:
                continue
            which = _LABEL[metric]
            se = bootstrap_se(
                labels[name][which],
                scored.candidate[which],
                scored.serving[which],
                metric,
                rounds,
                seed,
            )
            if worse > margin + 2 * se:
                sign = "<" if higher_is_better else ">"
                op = "-" if higher_is_better else "+"
                return refuse(
                    f"{name}: {metric} {mine:.4f} {sign} serving {theirs:.4f} {op} {margin} "
                    f"(paired bootstrap se {se:.4f}, n={len(scored.click)})"
                )
    return GateDecision(True, "no worse than the serving model", candidate, serving)
