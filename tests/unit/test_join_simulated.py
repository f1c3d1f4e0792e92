"""A simulated day through the join: the stream labels equal the offline rules and the truth."""

from __future__ import annotations

import random

from liverank.simulator.run import parse_start
from liverank.simulator.traffic import TrafficGenerator
from liverank.simulator.world import WorldConfig, build_world
from streams.events import Event, Invalid, encode_document, parse_event
from streams.join import JoinCore, LabelRules, Sample
from streams.reference import reference_labels

RULES = LabelRules()


def simulated_day() -> tuple[list[Event], dict[str, tuple[int, int]]]:
    config = WorldConfig(days=1, users=250, anchors=70, seed=21, start_ts=parse_start("2026-11-03"))
    world = build_world(config)
    events: list[Event] = []
    truth: dict[str, tuple[int, int]] = {}
    for day in TrafficGenerator(world, seed=config.seed).days():
        for _, _, topic, _, document in day.events:
            event = parse_event(topic, encode_document(document))
            assert not isinstance(event, Invalid)
            events.append(event)
        for row in day.truth:
            truth[f"{row['request_id']}:{row['anchor_id']}"] = (row["click"], row["conversion"])
    return events, truth


def join(events: list[Event]) -> tuple[dict[str, Sample], JoinCore]:
    core = JoinCore(RULES, {})
    best: dict[str, Sample] = {}
    newest = float("-inf")
    for event in events:
        out = core.process(event)
        newest = max(newest, event.ts)
        out += core.advance(newest - RULES.allowed_lateness)
        for sample in out:
            if sample.sample_id not in best or sample.version > best[sample.sample_id].version:
                best[sample.sample_id] = sample
    for sample in core.advance(float("inf")):
        best[sample.sample_id] = sample
    return best, core


def test_a_simulated_day_joins_to_the_offline_labels_and_the_ground_truth() -> None:
    events, truth = simulated_day()
    expected = reference_labels(events, RULES)
    assert expected == truth  # the simulator's own record agrees with the rules
    rng = random.Random(4)
    shuffled = sorted(events, key=lambda e: e.ts + rng.uniform(0, RULES.allowed_lateness))
    for arrival in (events, shuffled):
        samples, core = join(arrival)
        assert {k: (s.click, s.conversion) for k, s in samples.items()} == expected
        assert all(s.final for s in samples.values())
        assert core.counters.join_rate == 1.0
        assert core.counters.late == {}
        assert core.open_count() == 0
