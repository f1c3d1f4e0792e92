"""``liverank simulate``: build a world, generate its traffic and send it to a sink.

Sinks: JSON-lines files (one per topic, plus ground truth and profiles), or the Kafka topics
at a chosen speed of event time. Same seed, same bytes.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from liverank.settings import Settings
from liverank.simulator.stats import TrafficStats
from liverank.simulator.traffic import DayTraffic, Ranker, SimEvent, TrafficGenerator
from liverank.simulator.world import (
    AGE_BANDS,
    CATEGORIES,
    GENDERS,
    TAGS,
    World,
    WorldConfig,
    build_world,
)
from streams.events import INPUT_TOPICS, encode_document
from streams.join import LabelRules


class Sink(Protocol):
    def write_day(self, traffic: DayTraffic) -> None: ...

    def close(self) -> None: ...


def _day_string(start_ts: float, day: int) -> str:
    return datetime.fromtimestamp(start_ts + day * 86400, tz=UTC).strftime("%Y-%m-%d")


def write_profiles(world: World, folder: Path) -> None:
    """Offline profiles as Parquet: ``users.parquet`` and ``anchors.parquet``, every ID."""
    folder.mkdir(parents=True, exist_ok=True)
    users, anchors, start = world.users, world.anchors, world.config.start_ts
    pq.write_table(
        pa.table(
            {
                "user_id": users.ids,
                "age_band": [AGE_BANDS[i] for i in users.age_band],
                "gender": [GENDERS[i] for i in users.gender],
                "categories": [[CATEGORIES[c] for c in picked] for picked in users.picked],
                "signup_day": [_day_string(start, int(d)) for d in users.join_day],
            }
        ),
        folder / "users.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "anchor_id": anchors.ids,
                "category": [CATEGORIES[c] for c in anchors.category],
                "tags": [[TAGS[t] for t in tags] for tags in anchors.tags],
                "signup_day": [_day_string(start, int(d)) for d in anchors.join_day],
            }
        ),
        folder / "anchors.parquet",
    )


def _write_truth(stream: IO[bytes], truth: Iterable[dict[str, Any]]) -> None:
    stream.writelines(encode_document(row) + b"\n" for row in truth)


class FileSink:
    """``<dir>/<topic>.jsonl`` per input topic, ``ground_truth.jsonl``, ``profiles/``."""

    def __init__(self, folder: Path, world: World) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.files = {topic: (folder / f"{topic}.jsonl").open("wb") for topic in INPUT_TOPICS}
        self.truth = (folder / "ground_truth.jsonl").open("wb")
        write_profiles(world, folder / "profiles")

    def write_day(self, traffic: DayTraffic) -> None:
        for _, _, topic, _, document in traffic.events:
            self.files[topic].write(encode_document(document) + b"\n")
        _write_truth(self.truth, traffic.truth)

    def close(self) -> None:
        for handle in (*self.files.values(), self.truth):
            handle.close()


class KafkaSink:
    """Publishes to ``<prefix>.<topic>`` keyed by user_id (anchor_id for anchor-status).

    ``speed`` is event seconds per wall second (600: ten event-minutes a second); 0 publishes
    as fast as the broker takes it.
    """

    def __init__(self, settings: Settings, speed: float, world: World, side: Path | None) -> None:
        from kafka import KafkaProducer

        self.settings = settings
        self.speed = speed
        self.producer = KafkaProducer(
            client_id="liverank-simulator",
            acks="all",
            linger_ms=20,
            batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
            **settings.kafka.client_options(),
        )
        self.topics = {topic: settings.topic(topic) for topic in INPUT_TOPICS}
        self.first_ts: float | None = None
        self.wall_start = 0.0
        self.sent = 0
        self.last_report = time.monotonic()
        self.truth: IO[bytes] | None = None
        if side is not None:
            side.mkdir(parents=True, exist_ok=True)
            self.truth = (side / "ground_truth.jsonl").open("wb")
            write_profiles(world, side / "profiles")

    def write_day(self, traffic: DayTraffic) -> None:
        for event in traffic.events:
            self._pace(event)
            _ts, _, topic, key, document = event
            self.producer.send(
                self.topics[topic], key=key.encode(), value=encode_document(document)
            )
            self.sent += 1
        if self.truth is not None:
            _write_truth(self.truth, traffic.truth)
        self.producer.flush()

    def _pace(self, event: SimEvent) -> None:
        ts = event[0]
        if self.first_ts is None:
            self.first_ts, self.wall_start = ts, time.monotonic()
        if self.speed > 0:
            due = self.wall_start + (ts - self.first_ts) / self.speed
            delay = due - time.monotonic()
            if delay > 0.002:
                time.sleep(delay)
        now = time.monotonic()
        if now - self.last_report >= 10:
            self.last_report = now
            stamp = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M")
            print(
                f"[simulate] event time {stamp}, {self.sent:,d} events sent",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()
        if self.truth is not None:
            self.truth.close()


class SamplesSink:
    """Lands labelled samples under a samples root through the workers' pipeline, in process."""

    def __init__(self, root: str, world: World, rules: LabelRules, partitions: int) -> None:
        from streams.offline import OfflineLander, world_profiles

        self.lander = OfflineLander(root, rules, partitions, profiles=world_profiles(world))

    def write_day(self, traffic: DayTraffic) -> None:
        self.lander.feed(traffic.events)

    def close(self) -> None:
        self.lander.finish()


class NullSink:
    def write_day(self, traffic: DayTraffic) -> None:
        return None

    def close(self) -> None:
        return None


def parse_start(start: str) -> float:
    """``YYYY-MM-DD`` (UTC midnight) → epoch seconds."""
    try:
        day = datetime.strptime(start, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"start must be a date YYYY-MM-DD, got {start!r}") from None
    return day.timestamp()


def simulate(
    config: WorldConfig, sink: Sink, ranker: Ranker | None = None, world: World | None = None
) -> TrafficStats:
    """Generate every day of ``config`` into ``sink``; return the statistics."""
    began = time.perf_counter()
    world = world or build_world(config)
    stats = TrafficStats()
    stats.add_world(world)
    generator = TrafficGenerator(world, seed=config.seed, ranker=ranker)
    try:
        for traffic in generator.days():
            sink.write_day(traffic)
            stats.add_day(traffic)
            print(
                f"[simulate] day {traffic.day + 1}/{world.day_count}: "
                f"{len(traffic.events):,d} events, {len(traffic.truth):,d} impressions",
                file=sys.stderr,
                flush=True,
            )
    finally:
        sink.close()
    stats.generate_seconds = time.perf_counter() - began
    return stats


def run_simulation(
    settings: Settings,
    *,
    days: float,
    users: int,
    anchors: int,
    seed: int,
    start: str,
    out: Path | None,
    speed: float,
    truth: Path | None,
    dry_run: bool,
    samples: str | None = None,
    drift: float = 1.0,
) -> TrafficStats:
    if days <= 0 or users <= 0 or anchors <= 0:
        raise ValueError("days, users and anchors must be positive")
    if drift < 0:
        raise ValueError("drift must be 0 or more (1 is the default scenario)")
    config = WorldConfig(
        days=days,
        users=users,
        anchors=anchors,
        seed=seed,
        start_ts=parse_start(start),
        drift=drift,
    )
    world = build_world(config)
    sink: Sink
    if dry_run:
        sink = NullSink()
    elif samples is not None:
        sink = SamplesSink(samples, world, LabelRules.from_settings(settings.labels), 4)
    elif out is not None:
        sink = FileSink(out, world)
    else:
        sink = KafkaSink(settings, speed, world, truth)
    stats = simulate(config, sink, world=world)
    if out is not None and not dry_run:
        summary = {
            "config": {
                "days": days,
                "users": users,
                "anchors": anchors,
                "seed": seed,
                "start": start,
            }
        }
        summary["stats"] = stats.as_dict()
        (out / "simulation.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return stats
