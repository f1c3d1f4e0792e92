"""Table-driven tests of the feature aggregators, with missing values and out-of-order events."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from features.aggregators import DecayedRate, RecentItems, Sessions, WindowedSum

# (window, buckets, updates [(ts, value)], now, expected total)
WINDOWED = [
    (300, 5, [], 100, 0.0),
    (300, 5, [(0, 1.0)], 0, 1.0),
    (300, 5, [(0, 1.0), (59, 2.0)], 299, 3.0),
    (300, 5, [(0, 1.0), (59, 2.0), (60, 4.0)], 300, 4.0),  # bucket [0, 60) slid out
    (300, 5, [(0, 1.0), (10, None)], 10, 1.0),  # a missing value
    (300, 5, [(100, 2.5), (50, 1.5)], 120, 4.0),  # out of order, same window
    (300, 5, [(1000, 1.0), (100, 5.0)], 1000, 1.0),  # too old for the window: dropped
    (3600, 12, [(t, 1.0) for t in range(0, 7200, 60)], 7199, 60.0),
    (86400, 12, [(0, 30.0), (43200, 12.5)], 86399, 42.5),
    (86400, 12, [(0, 30.0), (43200, 12.5)], 86400 + 7199, 12.5),  # 2-hour buckets
    (86400, 12, [(0, 30.0), (43200, 12.5)], 86400 + 43199, 12.5),
    (86400, 12, [(0, 30.0), (43200, 12.5)], 86400 + 43200, 0.0),
]


@pytest.mark.parametrize(("window", "buckets", "updates", "now", "expected"), WINDOWED)
def test_windowed_sum(
    window: float,
    buckets: int,
    updates: list[tuple[float, float | None]],
    now: float,
    expected: float,
) -> None:
    counter = WindowedSum(window=window, buckets=buckets)
    for ts, value in updates:
        counter.add(ts, value)
    assert counter.total(now) == pytest.approx(expected)
    restored = WindowedSum.from_state(window, buckets, counter.to_state())
    assert restored.total(now) == pytest.approx(expected)


def test_windowed_sum_is_order_independent() -> None:
    rng = random.Random(3)
    updates = [(rng.uniform(0, 900), rng.choice([1.0, 2.0, None])) for _ in range(40)]
    reference = None
    for _ in range(20):
        rng.shuffle(updates)
        counter = WindowedSum(window=300, buckets=10)
        for ts, value in updates:
            counter.add(ts, value)
        state = counter.to_state()
        reference = reference or state
        assert state == reference


# (half_life, prior_rate, prior_weight, updates [(ts, num, den)], now, expected rate)
DECAYED = [
    (3600, 0.05, 10.0, [], 0, 0.05),
    (3600, 0.0, 0.0, [], 0, 0.0),
    (3600, 0.0, 0.0, [(0, 1, 1)], 0, 1.0),
    (3600, 0.0, 0.0, [(0, 1, 2), (3600, 0, 1)], 3600, 0.5 / 2.0),
    (3600, 0.1, 1.0, [(0, 1, 1), (3600, 0, 1)], 3600, 0.6 / 2.5),
    (3600, 0.1, 1.0, [(3600, 0, 1), (0, 1, 1)], 3600, 0.6 / 2.5),  # out of order
    (3600, 0.1, 1.0, [(0, None, 1), (0, 1, None)], 0, 1.1 / 2.0),  # missing parts
    (60, 0.2, 1.0, [(0, 5, 5)], 60 * 20, (5 * 2**-20 + 0.2) / (5 * 2**-20 + 1)),
]


@pytest.mark.parametrize(("half_life", "prior", "weight", "updates", "now", "expected"), DECAYED)
def test_decayed_rate(
    half_life: float,
    prior: float,
    weight: float,
    updates: list[tuple[float, float | None, float | None]],
    now: float,
    expected: float,
) -> None:
    rate = DecayedRate(half_life=half_life, prior_rate=prior, prior_weight=weight)
    for ts, num, den in updates:
        rate.add(ts, num, den)
    assert rate.rate(now) == pytest.approx(expected)
    restored = DecayedRate.from_state(half_life, prior, weight, rate.to_state())
    assert restored.rate(now) == pytest.approx(expected)


def test_decayed_rate_is_order_independent() -> None:
    updates = [(0.0, 1, 1), (100.0, 0, 1), (50.0, 1, 1), (400.0, 0, 2)]
    values = set()
    for order in itertools.permutations(updates):
        rate = DecayedRate(half_life=300)
        for ts, num, den in order:
            rate.add(ts, num, den)
        values.add(round(rate.rate(400.0), 12))
    assert len(values) == 1


# (capacity, updates [(ts, item)], expected newest first)
RECENT = [
    (3, [], []),
    (3, [(1, "a")], ["a"]),
    (3, [(1, "a"), (2, "b"), (3, "a")], ["a", "b"]),
    (2, [(1, "a"), (2, "b"), (3, "c")], ["c", "b"]),
    (2, [(3, "c"), (1, "a"), (2, "b")], ["c", "b"]),  # out of order
    (2, [(5, "a"), (1, "a")], ["a"]),  # an older sighting does not move it back
    (3, [(1, "x"), (1, "y")], ["x", "y"]),  # ties break by item
]


@pytest.mark.parametrize(("capacity", "updates", "expected"), RECENT)
def test_recent_items(capacity: int, updates: list[tuple[float, str]], expected: list[str]) -> None:
    recent = RecentItems(capacity=capacity)
    for ts, item in updates:
        recent.add(ts, item)
    assert recent.items() == expected
    assert RecentItems.from_state(capacity, recent.to_state()).items() == expected


def test_recent_items_is_order_independent() -> None:
    rng = random.Random(5)
    updates = [(float(rng.randint(0, 30)), rng.choice("abcdefgh")) for _ in range(30)]
    results = set()
    for _ in range(30):
        rng.shuffle(updates)
        recent = RecentItems(capacity=4)
        for ts, item in updates:
            recent.add(ts, item)
        results.add(tuple(recent.items()))
    assert len(results) == 1


# (gap, updates, now, expected seconds since the previous session)
SESSIONS = [
    (1800, [], 100, -1.0),
    (1800, [0, 100], 200, -1.0),
    (1800, [0, 100, 2000], 2100, 2000.0),
    (1800, [0, 100, 2000, 1500], 2100, 2000.0),  # an older update is ignored
    (60, [0, 61, 200], 300, 239.0),
]


@pytest.mark.parametrize(("gap", "updates", "now", "expected"), SESSIONS)
def test_sessions(gap: float, updates: list[float], now: float, expected: float) -> None:
    sessions = Sessions(gap=gap)
    for ts in updates:
        sessions.add(ts)
    assert sessions.since_previous(now) == expected
    assert Sessions.from_state(gap, sessions.to_state()).since_previous(now) == expected
    assert not math.isnan(expected)
