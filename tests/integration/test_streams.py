"""Stream workers end to end on the real Kafka, Redis and HBase.

A simulated day is published to Kafka, real workers (``liverank streams worker``) consume it,
``liverank streams advance`` closes its windows, and what landed is compared with the labels
computed offline from the same events by the DESIGN rules.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer

from deploy.local.services import LocalServices
from liverank.settings import Settings
from snapshots.samples import read_completed
from streams.control import advance, combine_stats, read_stats
from streams.join import LabelRules
from streams.reference import (
    EXACT_FEATURES,
    feature_differences,
    reference_features,
    reference_labels,
)
from tests.integration.harness import (
    ROOT,
    landed_labels,
    last_ts,
    malformed,
    parsed,
    perturbed,
    publish,
    scoped,
    simulated_events,
    start_worker,
    stop,
    wait_for,
    wait_for_last_window,
    worker_env,
)

RULES = LabelRules()


@pytest.fixture(scope="module")
def day() -> list[tuple[str, str, bytes]]:
    return simulated_events()


def run_to_completion(
    settings: Settings,
    published: list[tuple[str, str, bytes]],
    workers: int = 1,
    backlog: bool = False,
) -> None:
    """Workers read ``published`` as it is sent, or with ``backlog`` all of it from the start
    (a restart after an outage: topics read at their own paces, hours apart)."""
    if backlog:
        publish(settings, published)
    processes = [start_worker(settings, f"w{i}") for i in range(workers)]
    try:
        if not backlog:
            publish(settings, published)
        advance(settings, last_ts(published) + 3 * 3600)
        wait_for_last_window(settings, last_ts(published), 240, [f"w{i}" for i in range(workers)])
    finally:
        for process in processes:
            stop(process)


def test_two_workers_land_exactly_the_offline_labels(
    services: LocalServices,
    settings: Settings,
    unique: str,
    tmp_path: Path,
    day: list[tuple[str, str, bytes]],
) -> None:
    local = scoped(settings, f"st{unique}", tmp_path)
    run_to_completion(local, day, workers=2)
    expected = reference_labels(parsed(day), RULES)
    assert landed_labels(local) == expected
    stats = combine_stats(read_stats(local.home))
    assert stats["join_rate"] == 1.0
    assert stats["dead_letters"] == {}
    assert len(stats["workers"]) == 2


def test_shuffled_duplicated_early_clicks_and_bad_input_land_the_same_labels(
    services: LocalServices,
    settings: Settings,
    unique: str,
    tmp_path: Path,
    day: list[tuple[str, str, bytes]],
) -> None:
    local = scoped(settings, f"sp{unique}", tmp_path)
    noisy = perturbed(day, RULES.allowed_lateness, seed=5)
    assert len(noisy) > len(day) * 1.03  # duplicates are in
    bad = malformed(local.kafka.partitions)
    middle = len(noisy) // 2
    run_to_completion(local, noisy[:middle] + bad + noisy[middle:])
    assert landed_labels(local) == reference_labels(parsed(day), RULES)
    stats = combine_stats(read_stats(local.home))
    assert stats["duplicates"] > 0
    assert sum(stats["dead_letters"].values()) == len(bad)
    # The dead letters are on the topic, each with its source and reason.
    consumer = KafkaConsumer(
        local.topic("deadletter"),
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
        **local.kafka.client_options(),
    )
    records = [json.loads(m.value) for m in consumer]
    consumer.close()
    assert len(records) == len(bad)
    assert {r["source_topic"] for r in records} == {local.topic(t) for t, _, _ in bad}
    assert all(
        r["error"] and set(r) == {"source_topic", "partition", "offset", "error", "raw"}
        for r in records
    )


def test_partitions_ticked_ahead_still_complete_the_windows_created_behind_them(
    services: LocalServices, settings: Settings, unique: str, tmp_path: Path
) -> None:
    """Partitions 1-3 get no event and are ticked to the end before partition 0 lands any
    window: their watermarks never move again, yet every window must complete."""
    local = scoped(
        settings, f"si{unique}", tmp_path, sweep_interval_seconds=1.0, stats_interval_seconds=0.5
    )
    day = simulated_events(days=0.25, users=40, anchors=20, seed=7)
    end = last_ts(day) + 3 * 3600
    idle = range(1, local.kafka.partitions)
    worker = start_worker(local, "w0")
    try:
        advance(local, end, partitions=idle)

        def ticked() -> bool:
            marks = combine_stats(read_stats(local.home))["partitions"]
            return all((marks.get(str(p)) or {}).get("watermark") == end for p in idle)

        wait_for(ticked, 60, "the idle partitions' watermarks at the end")
        publish(local, day, partition=0)
        advance(local, end)
        wait_for_last_window(local, last_ts(day), 120)
    finally:
        stop(worker)
    assert landed_labels(local) == reference_labels(parsed(day), RULES)


def test_samples_and_redis_carry_the_features_computed_offline(
    services: LocalServices,
    settings: Settings,
    unique: str,
    tmp_path: Path,
    day: list[tuple[str, str, bytes]],
) -> None:
    local = scoped(settings, f"sf{unique}", tmp_path)
    run_to_completion(local, day, backlog=True)
    events = parsed(day)
    # Each sample carries the features of exactly the events before its impression.
    rows = read_completed(local.samples_root, ["sample_id", *EXACT_FEATURES]).to_pylist()
    wrong = feature_differences(rows, reference_features(events))
    assert not wrong, f"{len(wrong)} sample feature values differ: {list(wrong.items())[:5]}"
    assert sum(1 for row in rows if row["ua_clicks_7d"] > 0) > 20
    impressions: dict[str, list[float]] = defaultdict(list)
    clicks: dict[str, list[float]] = defaultdict(list)
    newest: dict[str, float] = defaultdict(float)
    pair_clicks: dict[tuple[str, str], int] = defaultdict(int)
    status: dict[str, tuple[float, bool, str, int]] = {}
    for event in events:
        kind = type(event).__name__
        if kind == "AnchorStatus":
            if event.anchor_id not in status or event.ts >= status[event.anchor_id][0]:
                status[event.anchor_id] = (event.ts, event.live, event.status, event.viewers)
            continue
        if kind in ("Impression", "Click", "Watch"):
            newest[event.user_id] = max(newest[event.user_id], event.ts)
        if kind == "Impression":
            impressions[event.user_id].append(event.ts)
        elif kind == "Click":
            clicks[event.user_id].append(event.ts)
            pair_clicks[(event.user_id, event.anchor_id)] += 1

    def in_window(times: list[float], now: float, window: float) -> int:
        width = window / 12
        current = int(now // width)
        return sum(1 for t in times if current - 12 < int(t // width) <= current)

    client = redis.Redis.from_url(local.redis.url)
    prefix = local.kafka.topic_prefix
    users = sorted(newest)
    assert users
    for user_id in users:
        stored = {
            k.decode(): v.decode() for k, v in client.hgetall(f"{prefix}:u:{user_id}").items()
        }
        now = newest[user_id]
        assert float(stored["u_impressions_24h"]) == in_window(impressions[user_id], now, 86400), (
            user_id
        )
        assert float(stored["u_impressions_1h"]) == in_window(impressions[user_id], now, 3600), (
            user_id
        )
        assert float(stored["u_clicks_24h"]) == in_window(clicks[user_id], now, 86400), user_id
    for (user_id, anchor_id), count in list(pair_clicks.items())[:50]:
        value = client.hget(f"{prefix}:ua:{user_id}", anchor_id)
        assert value is not None and json.loads(value)["ua_clicks_7d"] == count
    for anchor_id, (_, live, state, viewers) in status.items():
        stored = json.loads(client.get(f"{prefix}:a:{anchor_id}"))
        assert (stored["a_live"], stored["a_status"], stored["a_viewers"]) == (
            float(live),
            state,
            float(viewers),
        ), anchor_id
    client.close()


def test_streams_stats_command_reads_the_workers(
    services: LocalServices,
    settings: Settings,
    unique: str,
    tmp_path: Path,
    day: list[tuple[str, str, bytes]],
) -> None:
    local = scoped(settings, f"ss{unique}", tmp_path)
    run_to_completion(local, day[: len(day) // 4])
    result = subprocess.run(
        [sys.executable, "-m", "liverank.cli", "streams", "stats", "--json"],
        cwd=ROOT,
        env=worker_env(local),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["events_in"]["impressions"] > 0
    assert stats["join_rate"] == 1.0
    assert set(stats["partitions"]) == {str(p) for p in range(local.kafka.partitions)}
    assert stats["landing"]["files_written"] > 0
    assert stats["landing"]["rows_written"] >= stats["landing"]["files_written"]
