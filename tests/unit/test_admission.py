"""Admission rules with hand-computed cases, and the vocabulary that applies them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from liverank.settings import AdmissionSettings
from trainer.admission import AdmissionRule, dynamic_l1, rule_for
from trainer.optim import ftrl, group_lasso
from trainer.vocab import Vocabulary

HARD = AdmissionRule(mode="hard", full_threshold=5, incremental_threshold=2)


@pytest.mark.parametrize(
    ("windows", "admitted_after"),
    [
        # (phase, occurrences) per window; the window after which the ID is admitted
        ([("full", 4), ("full", 1)], 1),  # 4 + 1 = 5 reaches the full threshold
        ([("full", 1), ("incremental", 1)], 1),  # 1 + 1 = 2 reaches the incremental one
        ([("full", 4)], None),  # 4 < 5 in the offline job
        ([("incremental", 1), ("incremental", 0), ("incremental", 1)], 2),  # counts carried
        ([("full", 2)], None),  # 2 is enough incrementally, not for the full job
    ],
)
def test_hard_thresholds_carry_counts_across_windows_and_days(
    windows: list[tuple[str, int]], admitted_after: int | None
) -> None:
    vocab = Vocabulary()
    admitted_at = None
    for number, (phase, occurrences) in enumerate(windows):
        counts = {"u1": occurrences} if occurrences else {}
        new = vocab.observe("user_id", counts, ts=100.0 * number, rule=HARD, phase=phase)  # type: ignore[arg-type]
        if new and admitted_at is None:
            admitted_at = number
    assert admitted_at == admitted_after
    if admitted_after is None:
        assert vocab.pending["user_id"]["u1"] == sum(n for _, n in windows)
    else:
        assert vocab.entries("user_id").count["u1"] == sum(n for _, n in windows[: admitted_at + 1])


def test_pending_counts_survive_a_checkpoint() -> None:
    vocab = Vocabulary()
    vocab.observe("user_id", {"u1": 1, "u2": 3}, ts=10.0, rule=HARD, phase="full")
    restored = Vocabulary.from_table(vocab.to_table(), vocab.size)
    assert restored.pending["user_id"] == {"u1": 1, "u2": 3}
    assert restored.observe("user_id", {"u1": 1}, ts=20.0, rule=HARD, phase="incremental")


def test_poisson_admission_rate_is_within_a_binomial_bound() -> None:
    rule = AdmissionRule(mode="poisson", p=0.2, seed=11)
    vocab = Vocabulary()
    n = 5000
    new = vocab.observe("anchor_id", {f"a{i}": 1 for i in range(n)}, 0.0, rule, "incremental")
    rate = len(new) / n
    bound = 4 * math.sqrt(0.2 * 0.8 / n)  # four standard deviations
    assert abs(rate - 0.2) < bound
    # Each further occurrence is another draw: after 3 sightings, 1 - 0.8^3 = 0.488 are in.
    vocab3 = Vocabulary()
    for window in range(3):
        vocab3.observe("anchor_id", {f"a{i}": 1 for i in range(n)}, window, rule, "incremental")
    rate3 = len(vocab3.entries("anchor_id").rows) / n
    assert abs(rate3 - 0.488) < 4 * math.sqrt(0.488 * 0.512 / n)


def test_poisson_admission_does_not_depend_on_window_boundaries() -> None:
    rule = AdmissionRule(mode="poisson", p=0.3, seed=3)
    one, split = Vocabulary(), Vocabulary()
    one.observe("user_id", {f"u{i}": 4 for i in range(300)}, 0.0, rule, "incremental")
    for window in range(4):
        split.observe("user_id", {f"u{i}": 1 for i in range(300)}, window, rule, "incremental")
    assert set(one.entries("user_id").rows) == set(split.entries("user_id").rows)


@pytest.mark.parametrize(
    ("freq", "expected"),
    [(0, 0.05), (5, 0.04), (10, 0.03), (20, 0.01), (100, 0.01)],
)
def test_dynamic_l1_values(freq: int, expected: float) -> None:
    # l1 = 0.01, C = 4, N = 20: 0.01 * (1 + 4 * max(20 - freq, 0) / 20)
    assert dynamic_l1(0.01, 4.0, 20, freq) == pytest.approx(expected)


def test_dynamic_l1_sends_the_rare_ids_weights_to_zero_and_keeps_the_frequent_ones() -> None:
    # Two IDs get the same gradient 0.5 each step for 3 steps (alpha 0.1, beta 1).
    # FTRL: z after 3 steps is 1.5 minus sigma·w terms; with w = 0 while |z| <= l1, z = 0.5 k.
    rule = AdmissionRule(mode="dynamic_l1", l1=0.5, c=4.0, n=20)
    l1 = torch.tensor(rule.l1_of(np.array([1.0, 40.0])), dtype=torch.float32)  # rare, frequent
    assert l1.tolist() == pytest.approx([0.5 * (1 + 4 * 19 / 20), 0.5])  # 2.4 and 0.5
    w, z, n = torch.zeros(2), torch.zeros(2), torch.zeros(2)
    for _ in range(3):
        w, z, n = ftrl(w, torch.tensor([0.5, 0.5]), z, n, l1, alpha=0.1, beta=1.0, l2=0.0)
    # Rare: |z| = 1.5 <= 2.4 → exactly 0. Frequent: first step z = 0.5 <= 0.5 → 0; second
    # z = 1.0 > 0.5 → w = -(1.0 - 0.5) / ((1 + sqrt(0.5)) / 0.1) = -0.029289...
    assert w[0].item() == 0.0
    assert w[1].item() < 0.0
    second = -(1.0 - 0.5) / ((1 + math.sqrt(0.5)) / 0.1)
    sigma = (math.sqrt(0.75) - math.sqrt(0.5)) / 0.1
    z3 = 1.0 + 0.5 - sigma * second
    third = -(z3 - 0.5) / ((1 + math.sqrt(0.75)) / 0.1)
    assert w[1].item() == pytest.approx(third, rel=1e-5)


def test_group_lasso_zeroes_whole_rows_below_the_strength() -> None:
    rows = torch.tensor([[0.3, 0.4], [3.0, 4.0]])  # norms 0.5 and 5
    out = group_lasso(rows, torch.tensor([0.6, 0.6]))
    assert out[0].tolist() == [0.0, 0.0]
    assert out[1].norm().item() == pytest.approx(5.0 - 0.6)


def test_eviction_frees_rows_of_ids_unseen_for_the_ttl_and_reuses_them() -> None:
    vocab = Vocabulary()
    rule = AdmissionRule(mode="hard", full_threshold=1, incremental_threshold=1)
    vocab.observe("user_id", {"old": 1}, ts=0.0, rule=rule, phase="full")
    vocab.observe("user_id", {"new": 1}, ts=8 * 86400.0, rule=rule, phase="full")
    old_row = vocab.entries("user_id").rows["old"]
    assert vocab.evict(now=8 * 86400.0, ttl_seconds=7 * 86400.0) == [old_row]
    assert vocab.lookup("user_id", ["old"]).tolist() == [vocab.entries("user_id").default_row]
    assert vocab.observe("user_id", {"newer": 1}, 9 * 86400.0, rule, "full") == [old_row]


def test_admit_from_copies_the_other_vocabularys_ids() -> None:
    rule = AdmissionRule(mode="hard", full_threshold=1, incremental_threshold=1)
    base, serving = Vocabulary(), Vocabulary()
    base.observe("anchor_id", {"a1": 3}, 0.0, rule, "full")
    serving.observe("anchor_id", {"a1": 4, "a2": 2}, 10.0, rule, "incremental")
    added = base.admit_from(serving)
    assert [(name, value) for name, value, _, _ in added] == [("anchor_id", "a2")]
    assert base.entries("anchor_id").count["a2"] == 2
    assert base.entries("anchor_id").last_seen["a1"] == 10.0


def test_rule_overrides_per_vocabulary_and_typos_fail() -> None:
    settings = AdmissionSettings(fields={"anchor_id": {"mode": "poisson", "poisson_p": 0.5}})
    assert rule_for(settings, "anchor_id", 1).mode == "poisson"
    assert rule_for(settings, "anchor_id", 1).p == 0.5
    assert rule_for(settings, "user_id", 1).mode == "hard"
    assert rule_for(settings, "bucket:a_ctr", 1).full_threshold == 1
    with pytest.raises(ValueError, match="unknown keys"):
        rule_for(AdmissionSettings(fields={"user_id": {"treshold": 3}}), "user_id", 1)


@given(
    st.lists(
        st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(1, 3), max_size=4),
        max_size=6,
    )
)
def test_hard_admission_depends_only_on_the_total_count(windows: list[dict[str, int]]) -> None:
    vocab = Vocabulary()
    for number, counts in enumerate(windows):
        vocab.observe("v", counts, float(number), HARD, "incremental")
    totals: dict[str, int] = {}
    for counts in windows:
        for value, n in counts.items():
            totals[value] = totals.get(value, 0) + n
    admitted = {v for v, n in totals.items() if n >= HARD.incremental_threshold}
    assert set(vocab.entries("v").rows) == admitted
