"""Traffic on the simulated platform: requests from live anchors only → impressions with position
bias → clicks → watch heartbeats (screen-off listening included) → follows, gifts, comments,
shares; and the anchors' status events. Deterministic: same world and seed, same events.

Events come out one day at a time, sorted by (ts, sequence). Each impression also yields a
ground-truth row (the true click and conversion probabilities and what happened), kept apart
from the events.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from liverank.simulator.world import (
    CATEGORIES,
    LATENT_DIM,
    MINUTES_PER_DAY,
    STATUS_CTR,
    STATUS_CVR,
    STATUSES,
    USER_HOURLY,
    World,
)

SCENES = ("home", "home", "home", "discover")
SHOWN = 8  # impressions per request
RETRIEVED = 24  # candidates a request retrieves before ranking
HEARTBEAT_SECONDS = 20.0
MAX_WATCH_SECONDS = 3600.0
EFFECTIVE_WATCH = 30.0

Ranker = Callable[[str, str, list[str], float], list[str]]
"""(request_id, user_id, candidate anchor ids, ts) → the candidates in display order."""

SimEvent = tuple[float, int, str, str, dict[str, Any]]
"""(ts, sequence, topic, key, JSON document)."""


@dataclass
class DayTraffic:
    day: int
    events: list[SimEvent]
    truth: list[dict[str, Any]]


def popularity_ranker(world: World) -> Ranker:
    """The platform's default order: most viewers first (position bias then follows popularity)."""
    index = {anchor_id: i for i, anchor_id in enumerate(world.anchors.ids)}
    start = world.config.start_ts

    def rank(request_id: str, user_id: str, candidates: list[str], ts: float) -> list[str]:
        minute = min(int((ts - start) // 60), world.minutes - 1)
        viewers = [
            world.timeline.viewers(index[c], minute, float(world.anchors.quality[index[c]]))
            for c in candidates
        ]
        order = sorted(range(len(candidates)), key=lambda i: (-viewers[i], candidates[i]))
        return [candidates[i] for i in order]

    return rank


def _sigmoid(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return result


class TrafficGenerator:
    """Generates the events of a world, day by day."""

    def __init__(self, world: World, seed: int, ranker: Ranker | None = None) -> None:
        self.world = world
        self.rng = np.random.default_rng(seed + 1)
        self.ranker = ranker or popularity_ranker(world)
        self.sequence = 0
        self.requests = 0
        self.follows: set[tuple[int, int]] = set()
        self.pending: list[SimEvent] = []
        self.start = world.config.start_ts
        self.end_minute = int(world.config.days * MINUTES_PER_DAY)

    def days(self) -> Iterator[DayTraffic]:
        day_count = self.world.day_count
        for day in range(day_count):
            events, truth = self._day(day)
            events.extend(self.pending)
            events.sort(key=lambda e: (e[0], e[1]))
            last = day == day_count - 1
            cut = self.start + (day + 1) * MINUTES_PER_DAY * 60
            if last:
                self.pending = []
            else:
                split = _first_at_or_after(events, cut)
                events, self.pending = events[:split], events[split:]
            yield DayTraffic(day=day, events=events, truth=truth)

    # -- one day --------------------------------------------------------------------------

    def _day(self, day: int) -> tuple[list[SimEvent], list[dict[str, Any]]]:
        events: list[SimEvent] = []
        self._anchor_status(day, events)
        truth: list[dict[str, Any]] = []
        for ts, user in self._sessions(day):
            self._session(user, ts, events, truth)
        return events, truth

    def _emit(
        self, events: list[SimEvent], ts: float, topic: str, key: str, doc: dict[str, Any]
    ) -> None:
        self.sequence += 1
        ts = round(ts, 3)
        document = {"event_id": f"e{self.sequence:010d}", "ts": ts, **doc}
        events.append((ts, self.sequence, topic, key, document))

    def _anchor_status(self, day: int, events: list[SimEvent]) -> None:
        world, timeline = self.world, self.world.timeline
        lo = day * MINUTES_PER_DAY
        hi = min(lo + MINUTES_PER_DAY, self.end_minute)
        if hi <= lo:
            return
        window = timeline.status[:, lo:hi]
        before = timeline.status[:, lo - 1] if lo > 0 else np.full(len(window), -1, dtype=np.int8)
        active = np.flatnonzero((window >= 0).any(axis=1) | (before >= 0))
        for a in active:
            anchor_id = world.anchors.ids[a]
            category = CATEGORIES[int(world.anchors.category[a])]
            # Session start, status changes and the end are stamped on the minute, so a request
            # in that minute already sees them; viewer updates come a little later in it.
            offset = 1.0 + (int(a) * 7919 % 5000) / 100.0
            previous = int(before[a])
            row = window[a]
            for m in range(hi - lo):
                state = int(row[m])
                minute = lo + m
                changed = state != previous
                previous = state
                at = self.start + minute * 60
                if state < 0:
                    if changed:
                        self._status(events, at, anchor_id, category, "offline", 0)
                    continue
                since = minute - int(timeline.session_start[a, minute])
                if changed or since % 2 == 0:
                    viewers = timeline.viewers(int(a), minute, float(world.anchors.quality[a]))
                    ts = at if changed else at + offset
                    self._status(events, ts, anchor_id, category, STATUSES[state], viewers)

    def _status(
        self,
        events: list[SimEvent],
        ts: float,
        anchor_id: str,
        category: str,
        status: str,
        viewers: int,
    ) -> None:
        live = status != "offline"
        document = {"anchor_id": anchor_id, "live": live, "status": status}
        document.update(category=category, viewers=viewers)
        self._emit(events, ts, "anchor-status", anchor_id, document)

    def _sessions(self, day: int) -> list[tuple[float, int]]:
        users = self.world.users
        present = np.flatnonzero(users.join_day <= day)
        day_fraction = min(1.0, self.world.config.days - day)
        counts = self.rng.poisson(users.activity[present])
        hourly = USER_HOURLY / USER_HOURLY.sum()
        sessions: list[tuple[float, int]] = []
        total = int(counts.sum())
        hours = self.rng.choice(24, size=total, p=hourly)
        seconds = self.rng.uniform(0, 3600, size=total)
        owners = np.repeat(present, counts)
        for user, hour, second in zip(owners, hours, seconds, strict=True):
            offset = hour * 3600 + second
            if offset < day_fraction * 86400:
                sessions.append((self.start + day * 86400 + float(offset), int(user)))
        sessions.sort()
        return sessions

    def _session(
        self, user: int, ts: float, events: list[SimEvent], truth: list[dict[str, Any]]
    ) -> None:
        for _ in range(8):
            end = self._request(user, ts, events, truth)
            if end is None or self.rng.random() > 0.55:
                return
            ts = end + 5.0 + float(self.rng.exponential(20.0))

    def _request(
        self, user: int, ts: float, events: list[SimEvent], truth: list[dict[str, Any]]
    ) -> float | None:
        world, timeline, rng = self.world, self.world.timeline, self.rng
        minute = int((ts - self.start) // 60)
        if minute >= self.end_minute:
            return None
        live = timeline.live(minute)
        if len(live) == 0:
            return None
        anchors = world.anchors
        weight = (
            0.8 * timeline.popularity[live, minute]
            + anchors.quality[live]
            + timeline.trend[anchors.category[live], minute]
        )
        p = np.exp(weight - weight.max())
        p /= p.sum()
        retrieved = rng.choice(live, size=min(RETRIEVED, len(live)), replace=False, p=p)
        self.requests += 1
        request_id = f"r{self.requests:09d}"
        user_id = world.users.ids[user]
        index_of = {anchors.ids[a]: int(a) for a in retrieved}
        ordered = self.ranker(request_id, user_id, [anchors.ids[a] for a in retrieved], ts)
        shown = np.array([index_of[a] for a in ordered[:SHOWN]], dtype=np.int64)
        p_click, p_watch, p_follow, p_gift = self._probabilities(user, shown, minute)
        scene = SCENES[int(rng.integers(len(SCENES)))]
        clicks = rng.random(len(shown)) < p_click
        end = ts + 3.0 + float(rng.exponential(12.0))
        for position, a in enumerate(shown):
            anchor_id = anchors.ids[a]
            shown_ts = ts + 0.01 * position
            base = {"request_id": request_id, "user_id": user_id, "anchor_id": anchor_id}
            self._emit(
                events,
                shown_ts,
                "impressions",
                user_id,
                {**base, "scene": scene, "position": position},
            )
            p_conversion = 1.0 - (1.0 - p_watch[position]) * (1.0 - p_follow[position]) * (
                1.0 - p_gift[position]
            )
            row = {
                **base,
                "ts": round(shown_ts, 3),
                "position": position,
                "p_click": round(float(p_click[position]), 6),
                "p_conversion": round(float(p_conversion), 6),
                "click": int(clicks[position]),
                "conversion": 0,
            }
            if clicks[position]:
                converted, watch_end = self._visit(
                    user, int(a), shown_ts, base, position, p_watch, p_follow, p_gift, events
                )
                row["conversion"] = int(converted)
                end = max(end, watch_end)
            truth.append(row)
        return end

    def _probabilities(self, user: int, shown: np.ndarray, minute: int) -> tuple[np.ndarray, ...]:
        world, timeline = self.world, self.world.timeline
        users, anchors = world.users, world.anchors
        taste = anchors.latent[shown] @ users.taste[user] / math.sqrt(LATENT_DIM)
        category = anchors.category[shown]
        affinity = users.category_affinity[user, category]
        status = timeline.status[shown, minute].astype(np.int64)
        trend = timeline.trend[category, minute]
        followed = np.array([(user, int(a)) in self.follows for a in shown])
        examine = 1.0 / (1.0 + 0.22 * np.arange(len(shown)))
        ctr_logit = (
            -3.3
            + 0.75 * taste
            + affinity
            + anchors.quality[shown]
            + timeline.popularity[shown, minute]
            + trend
            + STATUS_CTR[status]
            + users.bias[user]
            + 1.2 * followed
        )
        cvr_logit = (
            -0.6
            + 0.9 * taste
            + 0.5 * anchors.quality[shown]
            + STATUS_CVR[status]
            + 0.5 * trend
            + 0.6 * affinity
        )
        p_watch = _sigmoid(cvr_logit)
        p_follow = np.where(followed, 0.0, 0.05 * _sigmoid(cvr_logit + 0.5))
        p_gift = 0.02 * _sigmoid(cvr_logit) * np.where(status == 2, 1.8, 1.0)
        return examine * _sigmoid(ctr_logit), p_watch, p_follow, p_gift

    def _visit(
        self,
        user: int,
        anchor: int,
        shown_ts: float,
        base: dict[str, str],
        position: int,
        p_watch: np.ndarray,
        p_follow: np.ndarray,
        p_gift: np.ndarray,
        events: list[SimEvent],
    ) -> tuple[bool, float]:
        rng = self.rng
        user_id = base["user_id"]
        clicked = shown_ts + 0.5 + min(float(rng.exponential(6.0)), 240.0)
        self._emit(events, clicked, "clicks", user_id, dict(base))
        # Watch time: exponential with P(W ≥ 30 s) = p_watch.
        pw = float(np.clip(p_watch[position], 1e-4, 1 - 1e-4))
        mean = -EFFECTIVE_WATCH / math.log(pw)
        watched = min(float(rng.exponential(mean)), MAX_WATCH_SECONDS)
        screen_off_at = watched * float(rng.uniform(0.2, 0.8)) if rng.random() < 0.3 else math.inf
        elapsed = 0.0
        while elapsed < watched:
            step = min(HEARTBEAT_SECONDS, watched - elapsed)
            elapsed += step
            self._emit(
                events,
                clicked + elapsed,
                "watch",
                user_id,
                {**base, "seconds": round(step, 3), "screen_on": elapsed <= screen_off_at},
            )
        converted = watched >= EFFECTIVE_WATCH
        horizon = max(1.0, min(watched, 600.0))
        for action, probability in (
            ("follow", p_follow[position]),
            ("gift", p_gift[position]),
            ("comment", 0.08),
            ("share", 0.01),
        ):
            if rng.random() < probability:
                doc: dict[str, Any] = {**base, "action": action}
                if action == "gift":
                    doc["value"] = float(
                        rng.choice([1.0, 5.0, 10.0, 52.0, 520.0], p=[0.5, 0.25, 0.15, 0.08, 0.02])
                    )
                self._emit(
                    events, clicked + float(rng.uniform(0.5, horizon)), "actions", user_id, doc
                )
                if action in ("follow", "gift"):
                    converted = True
                if action == "follow":
                    self.follows.add((user, anchor))
        return converted, clicked + watched


def _first_at_or_after(events: list[SimEvent], ts: float) -> int:
    lo, hi = 0, len(events)
    while lo < hi:
        mid = (lo + hi) // 2
        if events[mid][0] < ts:
            lo = mid + 1
        else:
            hi = mid
    return lo
