"""Statistics of simulated traffic, accumulated day by day and printed by ``simulate --stats``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from liverank.simulator.traffic import DayTraffic
from liverank.simulator.world import MINUTES_PER_DAY, World


@dataclass
class TrafficStats:
    events_by_topic: Counter[str] = field(default_factory=Counter)
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    requests: int = 0
    mean_p_click: float = 0.0
    live_anchors_by_hour: list[float] = field(default_factory=list)
    new_users_by_day: list[int] = field(default_factory=list)
    new_anchors_by_day: list[int] = field(default_factory=list)
    first_ts: float | None = None
    last_ts: float | None = None
    generate_seconds: float = 0.0

    def add_day(self, traffic: DayTraffic) -> None:
        for ts, _, topic, _, _ in traffic.events:
            self.events_by_topic[topic] += 1
            if self.first_ts is None or ts < self.first_ts:
                self.first_ts = ts
            if self.last_ts is None or ts > self.last_ts:
                self.last_ts = ts
        p_sum = self.mean_p_click * self.impressions
        for row in traffic.truth:
            self.impressions += 1
            self.clicks += row["click"]
            self.conversions += row["conversion"]
            p_sum += row["p_click"]
        self.mean_p_click = p_sum / self.impressions if self.impressions else 0.0
        self.requests = len({row["request_id"] for row in traffic.truth}) + self.requests

    def add_world(self, world: World) -> None:
        status = world.timeline.status
        days = world.day_count
        by_hour = [
            float(
                np.mean(
                    [(status[:, d * MINUTES_PER_DAY + h * 60 + 30] >= 0).sum() for d in range(days)]
                )
            )
            for h in range(24)
        ]
        self.live_anchors_by_hour = by_hour
        self.new_users_by_day = [int((world.users.join_day == d).sum()) for d in range(days)]
        self.new_anchors_by_day = [int((world.anchors.join_day == d).sum()) for d in range(days)]

    @property
    def events(self) -> int:
        return sum(self.events_by_topic.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "events_by_topic": dict(sorted(self.events_by_topic.items())),
            "requests": self.requests,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "conversions": self.conversions,
            "ctr": self.clicks / self.impressions if self.impressions else 0.0,
            "conversion_rate": self.conversions / self.clicks if self.clicks else 0.0,
            "ctcvr": self.conversions / self.impressions if self.impressions else 0.0,
            "mean_true_p_click": self.mean_p_click,
            "live_anchors_by_hour": [round(x, 1) for x in self.live_anchors_by_hour],
            "new_users_by_day": self.new_users_by_day,
            "new_anchors_by_day": self.new_anchors_by_day,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }

    def format(self) -> str:
        d = self.as_dict()
        lines = [f"events            {d['events']:>10,d}"]
        lines += [f"  {topic:15s} {count:>10,d}" for topic, count in d["events_by_topic"].items()]
        lines += [
            f"requests          {d['requests']:>10,d}",
            f"impressions       {d['impressions']:>10,d}",
            f"clicks            {d['clicks']:>10,d}   CTR {d['ctr']:.4f} "
            f"(true mean {d['mean_true_p_click']:.4f})",
            f"conversions       {d['conversions']:>10,d}   CVR {d['conversion_rate']:.4f} "
            f" CTCVR {d['ctcvr']:.4f}",
            "live anchors by hour (mean over days):",
            "  " + " ".join(f"{h:02d}:{v:.0f}" for h, v in enumerate(d["live_anchors_by_hour"])),
            "new IDs per day: users "
            + ", ".join(map(str, d["new_users_by_day"]))
            + " | anchors "
            + ", ".join(map(str, d["new_anchors_by_day"])),
        ]
        if self.generate_seconds:
            rate = d["events"] / self.generate_seconds
            lines.append(f"generated in {self.generate_seconds:.1f}s ({rate:,.0f} events/s)")
        return "\n".join(lines)
