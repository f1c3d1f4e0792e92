"""The label join: hand-made cases of each rule, then properties against the offline rules."""

from __future__ import annotations

import itertools
import json
import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.catalog import Source, defaults
from streams.events import Action, Click, Event, Impression, Watch
from streams.join import JoinCore, LabelRules, Sample
from streams.reference import reference_labels

RULES = LabelRules()
ALL_SOURCES: tuple[Source, ...] = (
    "user",
    "anchor",
    "user_anchor",
    "profile_user",
    "profile_anchor",
    "context",
)
FEATURES: dict[str, Any] = {
    "u_clicks_1h": 3.0,
    "u_recent_anchors": "a7,a9,a1",
    "a_status": "live",
    "p_anchor_tags": "pk,dance",
    "c_position": 2.0,
}
IDS = itertools.count()  # distinct events get distinct event ids
T0 = 1_793_491_200.0


def imp(ts: float, req: str = "r1", anchor: str = "a1", eid: str | None = None) -> Impression:
    return Impression(eid or f"i-{req}-{anchor}-{ts}", T0 + ts, req, "u1", anchor, "home", 0)


def click(ts: float, req: str = "r1", anchor: str = "a1", eid: str | None = None) -> Click:
    return Click(eid or f"c-{req}-{anchor}-{ts}", T0 + ts, req, "u1", anchor)


def watch(ts: float, seconds: float, req: str = "r1", anchor: str = "a1", on: bool = True) -> Watch:
    return Watch(f"w{next(IDS)}", T0 + ts, req, "u1", anchor, seconds, on)


def act(ts: float, action: str, req: str = "r1", anchor: str = "a1") -> Action:
    return Action(f"x{next(IDS)}", T0 + ts, req, "u1", anchor, action)


def run(
    events: list[Event], rules: LabelRules = RULES, pending: dict[str, Any] | None = None
) -> tuple[list[Sample], JoinCore]:
    """Feed events in order, advancing the watermark to max ts − lateness; close all at the end."""
    core = JoinCore(rules, {} if pending is None else pending)
    out: list[Sample] = []
    newest = float("-inf")
    for event in events:
        out.extend(core.process(event))
        newest = max(newest, event.ts)
        out.extend(core.advance(newest - rules.allowed_lateness))
    out.extend(core.advance(float("inf")))
    return out, core


def latest(samples: list[Sample]) -> dict[str, Sample]:
    best: dict[str, Sample] = {}
    for sample in samples:
        if sample.sample_id not in best or sample.version > best[sample.sample_id].version:
            best[sample.sample_id] = sample
    return best


def labels(samples: list[Sample]) -> dict[str, tuple[int, int]]:
    return {k: (s.click, s.conversion) for k, s in latest(samples).items()}


# -- the rules, one by one -------------------------------------------------------------------


def test_no_click_gives_one_final_negative_at_click_window_close() -> None:
    core = JoinCore(RULES, {})
    assert core.process(imp(0)) == []
    assert core.advance(T0 + 300) == []  # the window [0, 300] is still open at watermark 300
    (sample,) = core.advance(T0 + 300.5)
    assert (sample.version, sample.final, sample.click, sample.conversion) == (1, True, 0, 0)
    assert sample.sample_id == "r1:a1" and sample.ts == T0 + 0


def test_click_then_watch_emits_versions_and_a_final() -> None:
    core = JoinCore(RULES, {})
    core.process(imp(0))
    core.process(click(10))
    core.process(watch(20, 20))
    (v1,) = core.advance(T0 + 301)
    assert (v1.version, v1.final, v1.click, v1.conversion) == (1, False, 1, 0)
    (v2,) = core.process(watch(40, 20))  # 40 s watched: conversion turns 1 now
    assert (v2.version, v2.final, v2.click, v2.conversion) == (2, False, 1, 1)
    assert v2.watch_seconds == 40
    assert core.advance(T0 + 10 + 1800) == []
    (v3,) = core.advance(T0 + 10 + 1800.5)
    assert (v3.version, v3.final, v3.click, v3.conversion) == (3, True, 1, 1)


def test_screen_off_watch_counts_and_follow_or_gift_convert() -> None:
    events = [imp(0), click(5), watch(25, 15, on=False), watch(45, 15, on=False)]
    assert labels(run(events)[0]) == {"r1:a1": (1, 1)}
    for action, converts in (("follow", 1), ("gift", 1), ("comment", 0), ("share", 0)):
        result = labels(run([imp(0), click(5), act(100, action)])[0])
        assert result == {"r1:a1": (1, converts)}, action


def test_click_window_edges() -> None:
    assert labels(run([imp(0), click(300)])[0])["r1:a1"][0] == 1
    assert labels(run([imp(0), click(300.01)])[0])["r1:a1"][0] == 0
    assert labels(run([imp(0), click(-60)])[0])["r1:a1"][0] == 1  # within allowed lateness
    assert labels(run([click(-61), imp(0)])[0])["r1:a1"][0] == 0


def test_conversion_counts_only_the_window_after_the_earliest_click() -> None:
    events = [imp(0), click(10), watch(5, 100), watch(1811, 100), watch(1810, 29)]
    assert labels(run(events)[0]) == {"r1:a1": (1, 0)}
    events = [imp(0), click(10), watch(1810, 30)]
    assert labels(run(events)[0]) == {"r1:a1": (1, 1)}


def test_a_click_before_its_impression_still_joins() -> None:
    samples, core = run([click(10), imp(0), watch(30, 40)])
    assert labels(samples) == {"r1:a1": (1, 1)}
    assert core.counters.join_rate == 1.0


def test_duplicate_events_change_nothing() -> None:
    events: list[Event] = [imp(0), click(10), watch(20, 20)]
    once, _ = run(events)
    twice, core = run([*events, *events])
    assert once == twice
    assert core.counters.duplicates == 3


def test_a_second_impression_is_a_duplicate_and_the_earliest_stays() -> None:
    samples, core = run([imp(5, eid="i-late"), imp(0, eid="i-early"), click(303)])
    (sample,) = latest(samples).values()
    assert sample.ts == T0 + 0 and sample.click == 0  # 303 is outside [0, 300]
    assert core.counters.duplicates == 1


def test_late_events_are_counted_and_change_no_label() -> None:
    core = JoinCore(RULES, {})
    core.process(imp(0))
    (v1,) = core.advance(T0 + 400)
    assert v1.final and v1.click == 0
    assert core.process(click(100)) == []  # its window closed at 300
    assert core.process(imp(10, req="r2")) == []  # click window of r2 closed at 310 < 400
    assert core.counters.late == {"click": 1, "impression": 1}


def test_orphans_are_counted_not_emitted() -> None:
    samples, core = run([click(0, req="r9"), watch(10, 30, req="r9"), act(20, "gift", req="r9")])
    assert samples == []
    assert core.counters.orphans == {"click": 1, "watch": 1, "action": 1}
    assert core.counters.join_rate == 0.0


def test_conversion_never_exceeds_click() -> None:
    samples, _ = run([imp(0), watch(10, 100), act(20, "follow")])
    assert labels(samples) == {"r1:a1": (0, 0)}


def test_fake_negative_emits_a_negative_at_once_and_a_positive_when_the_click_comes() -> None:
    rules = LabelRules(policy="fake_negative")
    core = JoinCore(rules, {})
    (first,) = core.process(imp(0))
    assert (first.version, first.click, first.conversion, first.final) == (1, 0, 0, False)
    (positive,) = core.process(click(30))
    assert (positive.version, positive.click, positive.conversion) == (2, 1, 0)
    (converted,) = core.process(watch(70, 40))
    assert (converted.version, converted.click, converted.conversion) == (3, 1, 1)
    (final,) = core.advance(float("inf"))
    assert (final.version, final.final, final.click, final.conversion) == (4, True, 1, 1)


def test_recovery_from_the_table_alone_gives_the_same_result() -> None:
    events: list[Event] = [imp(0), click(10), imp(50, req="r2"), watch(30, 10), watch(50, 30)]
    whole, _ = run(events)
    table: dict[str, Any] = {}
    first = JoinCore(RULES, table)
    out: list[Sample] = []
    for event in events[:3]:
        out.extend(first.process(event, FEATURES))
        out.extend(first.advance(event.ts - 60))
    # The process dies; a new one rebuilds its expiry index from the table's changelog (JSON).
    second = JoinCore(RULES, json.loads(json.dumps(table)))
    second.watermark = first.watermark
    for event in events[3:]:
        out.extend(second.process(event))
        out.extend(second.advance(event.ts - 60))
    out.extend(second.advance(float("inf")))
    assert labels(out) == labels(whole)
    assert all(sample.features == {**defaults(*ALL_SOURCES), **FEATURES} for sample in out)


def test_samples_carry_the_impression_features_whole() -> None:
    """Every catalogue feature, exactly as given (floats, NaN, sequences), a default when
    missing; names outside the catalogue are no sample column and are dropped."""
    given = {**FEATURES, "u_ctr_decayed": 0.1 + 0.2, "a_cvr": float("nan"), "extra": 1.0}
    core = JoinCore(RULES, {})
    core.process(imp(0), given)
    (sample,) = core.advance(float("inf"))
    assert sample.features is not None
    assert math.isnan(sample.features.pop("a_cvr"))
    assert "extra" not in sample.features
    assert sample.features["u_ctr_decayed"] == 0.1 + 0.2
    assert sample.features == {
        k: v for k, v in {**defaults(*ALL_SOURCES), **given}.items() if k not in ("a_cvr", "extra")
    }


def test_tombstones_expire() -> None:
    core = JoinCore(RULES, {})
    core.process(imp(0))
    core.advance(T0 + 301)
    assert core.open_count() == 0 and len(core.pending) == 1
    core.advance(T0 + 301 + RULES.horizon + 1)
    assert core.pending == {}


# -- properties against the offline rules ----------------------------------------------------


@st.composite
def traffic(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = []
    n_samples = draw(st.integers(1, 6))
    for s in range(n_samples):
        req, anchor = f"r{s % 3}", f"a{s}"
        t = draw(st.floats(0, 4000))
        if draw(st.booleans()) or s == 0:
            events.append(imp(t, req, anchor))
        for c in range(draw(st.integers(0, 2))):
            ct = t + draw(st.floats(-120, 400))
            events.append(click(ct, req, anchor, eid=f"c{s}-{c}"))
            for _ in range(draw(st.integers(0, 4))):
                events.append(
                    watch(ct + draw(st.floats(0, 2000)), draw(st.floats(0, 25)), req, anchor)
                )
            if draw(st.booleans()):
                events.append(
                    act(
                        ct + draw(st.floats(0, 2000)),
                        draw(st.sampled_from(["follow", "gift", "comment"])),
                        req,
                        anchor,
                    )
                )
    return events


def arrive_within_lateness(
    events: list[Event], rng: random.Random, duplicate: float
) -> list[Event]:
    """An arrival order in which every event is at most allowed_lateness behind the newest."""
    copies = events + [e for e in events if rng.random() < duplicate]
    keyed = [(e.ts + rng.uniform(0, RULES.allowed_lateness), i, e) for i, e in enumerate(copies)]
    return [e for _, _, e in sorted(keyed, key=lambda x: (x[0], x[1]))]


def check_versions(samples: list[Sample]) -> None:
    by_id: dict[str, list[Sample]] = {}
    for sample in samples:
        by_id.setdefault(sample.sample_id, []).append(sample)
        assert sample.conversion <= sample.click
    for versions in by_id.values():
        assert [s.version for s in versions] == list(range(1, len(versions) + 1))
        assert [s.final for s in versions] == [False] * (len(versions) - 1) + [True]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic(), st.randoms(use_true_random=False), st.sampled_from([0.0, 0.05, 0.3]))
def test_final_labels_depend_only_on_the_set_of_events(
    events: list[Event], rng: random.Random, duplicate: float
) -> None:
    expected = reference_labels(events, RULES)
    samples, core = run(arrive_within_lateness(events, rng, duplicate))
    check_versions(samples)
    assert labels(samples) == expected
    assert core.open_count() == 0
    assert core.counters.late == {}


@settings(max_examples=100, deadline=None)
@given(traffic(), st.randoms(use_true_random=False))
def test_fake_negative_ends_with_the_same_labels(events: list[Event], rng: random.Random) -> None:
    rules = LabelRules(policy="fake_negative")
    samples, _ = run(arrive_within_lateness(events, rng, 0.05), rules)
    check_versions(samples)
    assert labels(samples) == reference_labels(events, rules)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_order_at_all_never_breaks_the_version_rules(seed: int) -> None:
    """Arbitrary lateness may change labels (late events are dropped), never the invariants."""
    rng = random.Random(seed)
    events = [imp(rng.uniform(0, 3000), f"r{i}", "a") for i in range(40)]
    events += [click(e.ts - T0 + rng.uniform(-100, 350), e.request_id, "a") for e in events[:25]]
    rng.shuffle(events)
    samples, core = run(events)
    check_versions(samples)
    assert len(latest(samples)) + core.counters.late.get("impression", 0) == 40
