"""Feature admission: which new IDs get their own embedding row, and the dynamic L1 rule.

Three rules, chosen per vocabulary (``[admission]`` and ``[admission.fields.<vocab>]``):

- ``hard``: an ID is admitted once it has been seen ``threshold`` times, where the threshold
  is the full one in the daily offline job and the smaller incremental one in the 15-minute
  updates. Counts of IDs not admitted yet are kept across windows and days and add up.
- ``poisson``: an unseen ID is admitted with probability ``p`` at each occurrence. The draw is
  a hash of (seed, vocabulary, value, occurrence number), so a replay admits the same IDs
  whatever the batch boundaries.
- ``dynamic_l1``: every ID is admitted; rare ones are pushed to zero by a stronger L1,
  ``l1 · (1 + C · max(N − freq, 0) / N)`` (``dynamic_l1``), in the FTRL update of the wide
  weights and the group-lasso shrink of the embedding rows (``trainer.optim``).

>>> rule = AdmissionRule(mode="hard", full_threshold=5, incremental_threshold=2)
>>> rule.admit("user_id", "u1", occurrences=3, pending=0, phase="full")
(False, 3)
>>> rule.admit("user_id", "u1", occurrences=2, pending=3, phase="full")
(True, 5)
>>> dynamic_l1(0.01, c=4.0, n=20, freq=5)
0.04
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Mode = Literal["hard", "poisson", "dynamic_l1"]
Phase = Literal["full", "incremental"]


def dynamic_l1(l1: float, c: float, n: int, freq: float) -> float:
    """Per-ID L1 strength: ``l1 · (1 + c · max(n − freq, 0) / n)``.

    An ID seen ``n`` times or more gets the base ``l1``; a never-seen one ``l1 · (1 + c)``.

    >>> dynamic_l1(0.01, c=4.0, n=20, freq=20), dynamic_l1(0.01, c=4.0, n=20, freq=0)
    (0.01, 0.05)
    """
    return round(l1 * (1.0 + c * max(n - freq, 0.0) / n), 12)


def dynamic_l1_array(l1: float, c: float, n: int, freq: np.ndarray) -> np.ndarray:
    """``dynamic_l1`` over an array of frequencies.

    >>> dynamic_l1_array(0.01, 4.0, 20, np.array([0.0, 10.0, 40.0])).round(6).tolist()
    [0.05, 0.03, 0.01]
    """
    return np.asarray(l1 * (1.0 + c * np.maximum(n - freq, 0.0) / n))


def poisson_draw(seed: int, vocab: str, value: str, occurrence: int) -> float:
    """A uniform number in [0, 1) fixed by its arguments (no RNG state to replay).

    >>> poisson_draw(7, "user_id", "u1", 0) == poisson_draw(7, "user_id", "u1", 0)
    True
    """
    digest = hashlib.blake2b(
        f"{seed}\x1f{vocab}\x1f{value}\x1f{occurrence}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True)
class AdmissionRule:
    mode: Mode = "hard"
    full_threshold: int = 5
    incremental_threshold: int = 2
    p: float = 0.2
    l1: float = 1e-3
    c: float = 4.0
    n: int = 20
    seed: int = 7

    def threshold(self, phase: Phase) -> int:
        return self.full_threshold if phase == "full" else self.incremental_threshold

    def admit(
        self, vocab: str, value: str, occurrences: int, pending: int, phase: Phase
    ) -> tuple[bool, int]:
        """Whether a not-yet-admitted ID is admitted after ``occurrences`` more sightings,
        and its count so far (``pending`` carried from earlier windows and days, plus these).

        >>> AdmissionRule(mode="dynamic_l1").admit("anchor_id", "a9", 1, 0, "incremental")
        (True, 1)
        """
        count = pending + occurrences
        if self.mode == "dynamic_l1":
            return True, count
        if self.mode == "hard":
            return count >= self.threshold(phase), count
        for k in range(pending, count):
            if poisson_draw(self.seed, vocab, value, k) < self.p:
                return True, count
        return False, count

    def l1_of(self, freq: np.ndarray) -> np.ndarray:
        """The L1 strength of each row given its frequency (dynamic only in ``dynamic_l1``)."""
        if self.mode == "dynamic_l1":
            return dynamic_l1_array(self.l1, self.c, self.n, freq)
        return np.full(freq.shape, self.l1)


def rule_for(admission: Any, vocab: str, seed: int) -> AdmissionRule:
    """The rule of one vocabulary from the ``[admission]`` settings section (with overrides).

    Numeric buckets (``bucket:<field>``) are a fixed, small set: always admitted.
    """
    if vocab.startswith("bucket:"):
        return AdmissionRule(mode="hard", full_threshold=1, incremental_threshold=1, l1=0.0)
    values: dict[str, Any] = {
        "mode": admission.mode,
        "full_threshold": admission.full_threshold,
        "incremental_threshold": admission.incremental_threshold,
        "p": admission.poisson_p,
        "l1": admission.l1,
        "c": admission.l1_c,
        "n": admission.l1_n,
    }
    override = dict(admission.fields.get(vocab, {}))
    if "poisson_p" in override:
        override["p"] = override.pop("poisson_p")
    for key in ("l1_c", "l1_n"):
        if key in override:
            override[key[3:]] = override.pop(key)
    unknown = set(override) - set(values)
    if unknown:
        raise ValueError(f"admission.fields.{vocab}: unknown keys {sorted(unknown)}")
    values.update(override)
    if values["mode"] not in ("hard", "poisson", "dynamic_l1"):
        raise ValueError(f"admission.fields.{vocab}.mode: unknown mode {values['mode']!r}")
    return AdmissionRule(
        mode=values["mode"],
        full_threshold=int(values["full_threshold"]),
        incremental_threshold=int(values["incremental_threshold"]),
        p=float(values["p"]),
        l1=float(values["l1"]),
        c=float(values["c"]),
        n=int(values["n"]),
        seed=seed,
    )
