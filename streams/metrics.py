"""The workers' counters: Prometheus metrics and the stats file ``liverank streams stats`` reads."""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from streams.pipeline import AnchorSide, UserBatch, UserSide


class StreamMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "liverank_stream_events_total", "Messages read, by topic", ["topic"], registry=r
        )
        self.dead_letters = Counter(
            "liverank_stream_dead_letters_total", "Dead letters, by reason", ["reason"], registry=r
        )
        self.samples = Counter(
            "liverank_stream_samples_total", "Samples emitted, by version", ["version"], registry=r
        )
        self.late = Counter(
            "liverank_stream_late_total", "Late events, by kind", ["kind"], registry=r
        )
        self.orphans = Counter(
            "liverank_stream_orphans_total", "Orphan events, by kind", ["kind"], registry=r
        )
        self.join_rate = Gauge(
            "liverank_stream_join_rate", "Clicks that found their impression / clicks", registry=r
        )
        self.pending = Gauge(
            "liverank_stream_pending_samples", "Samples waiting in the negative cache", registry=r
        )
        self.held = Gauge(
            "liverank_stream_held_events",
            "Events read but waiting for a slower topic of their partition (event-time order)",
            registry=r,
        )
        self.watermark = Gauge(
            "liverank_stream_watermark_seconds", "Event-time watermark", ["partition"], registry=r
        )
        self.watermark_lag = Gauge(
            "liverank_stream_watermark_lag_seconds",
            "Newest event time - watermark",
            ["partition"],
            registry=r,
        )
        self.degraded = Counter(
            "liverank_stream_degraded_total", "Lookups that fell back", ["what"], registry=r
        )
        self.retries = Counter(
            "liverank_stream_retries_total", "Retried outputs", ["what"], registry=r
        )
        self._seen: dict[str, dict[Any, int]] = {}

    def _sync(self, name: str, counter: Counter, current: dict[Any, int]) -> None:
        before = self._seen.setdefault(name, {})
        for key, value in current.items():
            if value > before.get(key, 0):
                counter.labels(str(key)).inc(value - before.get(key, 0))
                before[key] = value

    def observe_user_batch(self, side: UserSide, batch: UserBatch, messages: int) -> None:
        self._sync("events_in", self.events_in, side.counters.events_in)
        self._sync("dead_letters", self.dead_letters, side.counters.dead_letters)
        counts = side.join_counters()
        clicks, joined = counts.clicks, counts.joined_clicks
        self._sync("late", self.late, counts.late)
        self._sync("orphans", self.orphans, counts.orphans)
        self._sync("samples", self.samples, counts.samples_by_version)
        if clicks:
            self.join_rate.set(joined / clicks)
        self.held.set(side.held_events())
        for partition, watermark in batch.watermarks.items():
            if math.isfinite(watermark):
                self.watermark.labels(str(partition)).set(watermark)
                mark = side.marks.get(partition)
                if mark is not None and mark.newest:
                    self.watermark_lag.labels(str(partition)).set(
                        max(mark.newest.values()) - watermark
                    )

    def observe_anchor_batch(self, side: AnchorSide, messages: int) -> None:
        self._sync("anchor_events_in", self.events_in, side.counters.events_in)
        self._sync("anchor_dead_letters", self.dead_letters, side.counters.dead_letters)

    def snapshot(
        self, user_side: UserSide | None, anchor_side: AnchorSide | None
    ) -> dict[str, Any]:
        """Plain numbers for the stats file."""
        out: dict[str, Any] = {"events_in": {}, "dead_letters": {}, "duplicates": 0}
        for side in (user_side, anchor_side):
            if side is None:
                continue
            for topic, n in side.counters.events_in.items():
                out["events_in"][topic] = out["events_in"].get(topic, 0) + n
            for reason, n in side.counters.dead_letters.items():
                out["dead_letters"][reason] = out["dead_letters"].get(reason, 0) + n
            out["duplicates"] += side.counters.duplicates
        clicks = joined = 0
        late: dict[str, int] = {}
        orphans: dict[str, int] = {}
        versions: dict[str, int] = {}
        partitions: dict[str, Any] = {}
        if user_side is not None:
            counts = user_side.join_counters()
            clicks, joined = counts.clicks, counts.joined_clicks
            late, orphans = dict(counts.late), dict(counts.orphans)
            versions = {str(v): n for v, n in counts.samples_by_version.items()}
            out["duplicates"] += counts.duplicates
            for partition, core in user_side.cores.items():
                mark = user_side.marks.get(partition)
                newest = max(mark.newest.values()) if mark and mark.newest else None
                watermark = core.watermark if math.isfinite(core.watermark) else None
                lag = newest - watermark if newest is not None and watermark is not None else None
                partitions[str(partition)] = {
                    "watermark": watermark,
                    "newest_event": newest,
                    "lag_seconds": lag,
                }
            out["pending_samples"] = user_side.open_samples()
            out["held_events"] = user_side.held_events()
        out.update(
            clicks=clicks,
            joined_clicks=joined,
            join_rate=joined / clicks if clicks else None,
            late=late,
            orphans=orphans,
            samples_by_version=versions,
            partitions=partitions,
        )
        return out
