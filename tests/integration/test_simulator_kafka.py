"""The simulator publishes to the real Kafka exactly what it writes to files, keyed and paced."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from kafka import KafkaConsumer

from deploy.local.services import LocalServices
from liverank.settings import Settings
from liverank.simulator.run import FileSink, KafkaSink, parse_start, simulate
from liverank.simulator.world import WorldConfig, build_world
from streams.events import INPUT_TOPICS
from streams.topics import ensure_topics
from tests.integration.harness import SCOPED


def scoped(settings: Settings, unique: str) -> Settings:
    SCOPED.add(f"sim{unique}")
    kafka = settings.kafka.model_copy(update={"topic_prefix": f"sim{unique}"})
    return settings.model_copy(update={"kafka": kafka})


def consume_all(settings: Settings, expected: int) -> dict[str, list[tuple[int, bytes, bytes]]]:
    topics = [settings.topic(t) for t in INPUT_TOPICS]
    consumer = KafkaConsumer(
        *topics,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **settings.kafka.client_options(),
    )
    received: dict[str, list[tuple[int, bytes, bytes]]] = defaultdict(list)
    count, deadline = 0, time.monotonic() + 120
    while count < expected and time.monotonic() < deadline:
        for tp, batch in consumer.poll(timeout_ms=1000, max_records=5000).items():
            name = tp.topic.split(".", 1)[1]
            received[name].extend((tp.partition, m.key, m.value) for m in batch)
            count += len(batch)
    consumer.close()
    return received


def test_published_events_equal_the_files_and_are_co_partitioned(
    services: LocalServices, settings: Settings, unique: str, tmp_path: Path
) -> None:
    local = scoped(settings, unique)
    ensure_topics(local)
    config = WorldConfig(days=1, users=60, anchors=25, seed=5, start_ts=parse_start("2026-11-01"))
    world = build_world(config)
    stats = simulate(config, FileSink(tmp_path, world), world=world)
    simulate(config, KafkaSink(local, speed=0, world=world, side=None), world=build_world(config))

    received = consume_all(local, stats.events)
    partition_of_user: dict[bytes, set[int]] = defaultdict(set)
    for topic in INPUT_TOPICS:
        lines = (tmp_path / f"{topic}.jsonl").read_bytes().splitlines()
        values = [value for _, _, value in received[topic]]
        assert sorted(values) == sorted(lines), topic
        for partition, key, value in received[topic]:
            field = b'"anchor_id":"' if topic == "anchor-status" else b'"user_id":"'
            assert field + key + b'"' in value
            if topic != "anchor-status":
                partition_of_user[key].add(partition)
    # One user's impressions, clicks, watch and actions all land in one partition.
    assert partition_of_user and all(len(p) == 1 for p in partition_of_user.values())


def test_speed_paces_event_time(services: LocalServices, settings: Settings, unique: str) -> None:
    local = scoped(settings, unique)
    ensure_topics(local)
    # 0.02 day = 28.8 event-minutes; at 1200x that takes at least ~1.4 wall seconds.
    config = WorldConfig(
        days=0.02, users=200, anchors=60, seed=3, start_ts=parse_start("2026-11-01")
    )
    world = build_world(config)
    began = time.monotonic()
    stats = simulate(config, KafkaSink(local, speed=1200, world=world, side=None), world=world)
    elapsed = time.monotonic() - began
    span = stats.last_ts - stats.first_ts
    assert span > 600
    assert elapsed >= span / 1200 * 0.9
