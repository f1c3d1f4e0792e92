"""Progressive validation by update cadence (``liverank train replay``).

One model is trained on the closed windows in event-time order, each window once. Each
cadence serves a copy of it refreshed at its boundaries — every window (15 min), every 2 hours,
every day — and every window is scored by each cadence's copy *before* the model trains on it.
So all cadences see the same training; only the staleness of what serves differs, which is
what the cadence comparison is about. The first ``warmup_days`` are trained on and scored but
left out of the means (a daily model has nothing to serve on day one).

Segments: a sample's user (anchor) is *new* when it appears in no sample of an earlier day;
``segments`` gives each cadence's pooled AUC on those samples — where staleness hurts most.

>>> CADENCES["2h"], cadence_boundary(7200.0, CADENCES["2h"]), cadence_boundary(8100.0, 7200.0)
(7200.0, True, False)
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from liverank.settings import Settings
from snapshots.layout import WINDOW_SECONDS, window_folder
from trainer.data import DAY, WindowReader, closed_windows
from trainer.learner import Learner
from trainer.metrics import auc

CADENCES: dict[str, float] = {"15min": WINDOW_SECONDS, "2h": 7200.0, "daily": DAY}
SEGMENTS = ("new_user", "new_anchor")


def cadence_boundary(window_end: float, period: float) -> bool:
    return math.isclose(window_end % period, 0.0, abs_tol=1e-6)


@dataclass
class ReplayResult:
    cadences: list[str]
    windows: list[dict[str, Any]] = field(default_factory=list)
    warmup_until: float = 0.0  # windows before this are trained on, not in the means
    train_seconds: float = 0.0
    samples: int = 0
    model_ids: int = 0  # admitted IDs at the end, less the rows dynamic L1 zeroed
    model_bytes: int = 0  # the embedding and wide rows those IDs use

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and spread (standard deviation) of each cadence's AUCs after warm-up."""
        out: dict[str, dict[str, float]] = {}
        for cadence in self.cadences:
            scored = [w for w in self.windows if w["start"] >= self.warmup_until]
            entry: dict[str, float] = {"windows": float(len(scored))}
            for metric in ("ctr", "ctcvr"):
                values = [w[cadence][metric] for w in scored if math.isfinite(w[cadence][metric])]
                entry[metric] = statistics.fmean(values) if values else math.nan
                entry[f"{metric}_std"] = statistics.pstdev(values) if len(values) > 1 else 0.0
                pooled = _pooled(scored, cadence, metric)
                entry[f"{metric}_pooled"] = pooled
            out[cadence] = entry
        return out

    def paired(self) -> dict[str, dict[str, float]]:
        """Each fresher cadence against each staler one, window by window after warm-up:
        the mean AUC difference, its standard error and how many windows the fresher won.

        The windows' AUCs swing far more with the traffic (± several points) than the
        cadences differ; paired on the same window, that swing cancels out.
        """
        scored = [w for w in self.windows if w["start"] >= self.warmup_until]
        out: dict[str, dict[str, float]] = {}
        for i, fresher in enumerate(self.cadences):
            for staler in self.cadences[i + 1 :]:
                entry: dict[str, float] = {}
                for metric in ("ctr", "ctcvr"):
                    diffs = [
                        w[fresher][metric] - w[staler][metric]
                        for w in scored
                        if math.isfinite(w[fresher][metric]) and math.isfinite(w[staler][metric])
                    ]
                    n = len(diffs)
                    entry[f"{metric}_diff"] = statistics.fmean(diffs) if diffs else math.nan
                    entry[f"{metric}_se"] = (
                        statistics.stdev(diffs) / math.sqrt(n) if n > 1 else math.nan
                    )
                    entry[f"{metric}_won"] = float(sum(d > 0 for d in diffs))
                    entry[f"{metric}_windows"] = float(n)
                out[f"{fresher}-{staler}"] = entry
        return out

    def segments(self) -> dict[str, dict[str, dict[str, float]]]:
        """Pooled AUC per segment (``new_user``, ``new_anchor``) and cadence, after warm-up."""
        scored = [w for w in self.windows if w["start"] >= self.warmup_until]
        out: dict[str, dict[str, dict[str, float]]] = {}
        for segment in SEGMENTS:
            masks = [w["_segments"][segment] for w in scored]
            count = int(sum(int(m.sum()) for m in masks))
            entry: dict[str, dict[str, float]] = {}
            for cadence in self.cadences:
                entry[cadence] = {"samples": float(count)}
                for metric in ("ctr", "ctcvr"):
                    labels = [w["_labels"][metric][m] for w, m in zip(scored, masks, strict=True)]
                    scores = [
                        w["_scores"][cadence][metric][m] for w, m in zip(scored, masks, strict=True)
                    ]
                    entry[cadence][metric] = (
                        auc(np.concatenate(labels), np.concatenate(scores)) if count else math.nan
                    )
            out[segment] = entry
        return out


def _pooled(windows: Sequence[dict[str, Any]], cadence: str, metric: str) -> float:
    labels = [w["_labels"][metric] for w in windows]
    scores = [w["_scores"][cadence][metric] for w in windows]
    if not labels:
        return math.nan
    return auc(np.concatenate(labels), np.concatenate(scores))


def replay(
    settings: Settings,
    samples_root: str,
    cadences: Sequence[str] = ("15min", "2h", "daily"),
    warmup_days: float = 1.0,
    say: Callable[[str], None] = print,
) -> tuple[ReplayResult, dict[str, dict[str, float]]]:
    unknown = [c for c in cadences if c not in CADENCES]
    if unknown:
        raise ValueError(f"unknown cadence {unknown}; known: {', '.join(CADENCES)}")
    windows = closed_windows(samples_root)
    if not windows:
        raise ValueError(f"no closed sample window under {samples_root}")
    reader = WindowReader(samples_root, cache_windows=1)
    learner = Learner(settings)
    serving: dict[str, Learner] = {c: learner.clone() for c in cadences}
    first_day = windows[0] - windows[0] % DAY
    result = ReplayResult(list(cadences), warmup_until=first_day + warmup_days * DAY)
    known = _Known()
    for number, start in enumerate(windows, 1):
        table = reader.window(start)
        if table.num_rows == 0:
            continue
        known.turn(start)
        click = table["click"].to_numpy().astype(np.float64)
        ctcvr = click * table["conversion"].to_numpy().astype(np.float64)
        row: dict[str, Any] = {
            "start": start,
            "window": window_folder(start),
            "samples": table.num_rows,
            "_labels": {"ctr": click, "ctcvr": ctcvr},
            "_scores": {},
            "_segments": {
                "new_user": known.new("user", table["user_id"].to_pylist()),
                "new_anchor": known.new("anchor", table["anchor_id"].to_pylist()),
            },
        }
        for cadence in cadences:
            model = learner if cadence == "15min" else serving[cadence]
            p_ctr, _, p_ctcvr = model.predict(table)
            row[cadence] = {"ctr": auc(click, p_ctr), "ctcvr": auc(ctcvr, p_ctcvr)}
            row["_scores"][cadence] = {"ctr": p_ctr, "ctcvr": p_ctcvr}
        began = time.perf_counter()
        learner.fit(table, "incremental")
        result.train_seconds += time.perf_counter() - began
        result.samples += table.num_rows
        end = start + WINDOW_SECONDS
        for cadence in cadences:
            if cadence != "15min" and cadence_boundary(end, CADENCES[cadence]):
                serving[cadence] = learner.clone()
        result.windows.append(row)
        aucs = "  ".join(
            f"{c} ctr={row[c]['ctr']:.4f} ctcvr={row[c]['ctcvr']:.4f}" for c in cadences
        )
        say(f"[{number}/{len(windows)}] {row['window']} n={table.num_rows:5d}  {aucs}")
    kept = len(learner.vocab) - len(learner.dropped_rows())
    result.model_ids = kept
    row_bytes = learner.tables.embedding.shape[1] + learner.tables.wide.shape[1]
    result.model_bytes = kept * row_bytes * learner.tables.embedding.element_size()
    return result, result.summary()


class _Known:
    """The IDs seen on earlier days, and today's."""

    def __init__(self) -> None:
        self.day: float | None = None
        self.before: dict[str, set[str]] = {"user": set(), "anchor": set()}
        self.today: dict[str, set[str]] = {"user": set(), "anchor": set()}

    def turn(self, start: float) -> None:
        day = start - start % DAY
        if day != self.day:
            for kind, ids in self.today.items():
                self.before[kind] |= ids
                ids.clear()
            self.day = day

    def new(self, kind: str, ids: list[str]) -> np.ndarray:
        self.today[kind].update(ids)
        before = self.before[kind]
        return np.array([i not in before for i in ids], dtype=bool)


def public_windows(result: ReplayResult) -> list[dict[str, Any]]:
    """The per-window rows without the arrays (for JSON)."""
    return [{k: v for k, v in w.items() if not k.startswith("_")} for w in result.windows]
