"""Control messages: watermark ticks that move event time on (``liverank streams advance``)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from liverank.settings import Settings
from streams.pipeline import USER_SOURCES, tick_value


def parse_time(text: str) -> float:
    """Epoch seconds, or an ISO date-time (UTC unless it says otherwise).

    >>> parse_time("1793491200")
    1793491200.0
    >>> parse_time("2026-11-01T00:00:00")
    1793491200.0
    """
    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not a time: {text!r} (epoch seconds or ISO 8601)") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        value = moment.timestamp()
    if not math.isfinite(value):
        raise ValueError(f"not a finite time: {text!r}")
    return value


class Advancer:
    """Sends watermark ticks (see ``advance``), keeping its Kafka clients between calls: a
    publisher that knows its own event time ticks with it as it goes, so partitions with a
    quiet source (few actions on a small partition) still move on."""

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaConsumer, KafkaProducer
        from kafka.structs import TopicPartition

        self.settings = settings
        options = settings.kafka.client_options()
        self.partitions = range(settings.kafka.partitions)
        self.tps = {
            (s, p): TopicPartition(settings.topic(s), p)
            for s in USER_SOURCES
            for p in self.partitions
        }
        self.consumer = KafkaConsumer(client_id="liverank-advance", **options)
        self.producer = KafkaProducer(client_id="liverank-advance", acks="all", **options)

    def __call__(
        self, to: float, partitions: Iterable[int] | None = None
    ) -> dict[int, dict[str, int]]:
        """One tick per partition (every one, or ``partitions``): once a worker has read every
        user topic up to the end offsets it names, that partition's watermark moves to ``to``.
        Returns those offsets."""
        ends = self.consumer.end_offsets(list(self.tps.values()))
        sent: dict[int, dict[str, int]] = {}
        for partition in self.partitions if partitions is None else partitions:
            offsets = {s: int(ends[self.tps[s, partition]]) for s in USER_SOURCES}
            self.producer.send(
                self.settings.topic("control"),
                key=f"tick-{partition}".encode(),
                value=tick_value(to, offsets),
                partition=partition,
            )
            sent[partition] = offsets
        self.producer.flush()
        return sent

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()


def advance(
    settings: Settings, to: float, partitions: Iterable[int] | None = None
) -> dict[int, dict[str, int]]:
    """Send one tick per partition (``Advancer``) and close the clients."""
    advancer = Advancer(settings)
    try:
        return advancer(to, partitions)
    finally:
        advancer.close()


def read_stats(home: Path) -> list[dict[str, Any]]:
    """The stats files the workers write (one per worker)."""
    folder = home / "streams"
    stats = []
    for path in sorted(folder.glob("*.json")):
        try:
            stats.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return stats


def combine_stats(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the workers' stats."""
    total: dict[str, Any] = {
        "workers": [w.get("worker") for w in workers],
        "events_in": {},
        "dead_letters": {},
        "late": {},
        "orphans": {},
        "samples_by_version": {},
        "partitions": {},
        "clicks": 0,
        "joined_clicks": 0,
        "pending_samples": 0,
        "held_events": 0,
        "duplicates": 0,
        "landing": {"files_written": 0, "rows_written": 0, "samples_read_back": 0},
    }
    for stats in workers:
        for key, value in stats.get("landing", {}).items():
            total["landing"][key] = total["landing"].get(key, 0) + value
        for name in ("events_in", "dead_letters", "late", "orphans", "samples_by_version"):
            for key, value in stats.get(name, {}).items():
                total[name][key] = total[name].get(key, 0) + value
        for name in ("clicks", "joined_clicks", "pending_samples", "held_events", "duplicates"):
            total[name] += stats.get(name) or 0
        total["partitions"].update(stats.get("partitions", {}))
    total["join_rate"] = total["joined_clicks"] / total["clicks"] if total["clicks"] else None
    return total
