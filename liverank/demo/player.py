"""The demo's live traffic: the simulator's events published to Kafka at a set event-time
speed, held back when the stream workers fall behind, and its requests served by the scorer.

Each simulated request retrieves candidates; the simulator's platform shows them in its own
order (most viewers first, a fixed logging policy, so every cadence is compared on the same
samples). Before the request's impressions are published, the scorer ranks the retrieved
candidates under the same request id; its request-time snapshot then feeds the joiner, and the
scores it gave are kept to measure the serving model online.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from kafka import KafkaProducer

from liverank.settings import Settings
from liverank.simulator.traffic import DayTraffic, Ranker, TrafficGenerator, popularity_ranker
from liverank.simulator.world import World
from streams.control import Advancer
from streams.events import encode_document
from streams.pipeline import USER_SOURCES

TICK_EVENT_SECONDS = 300.0


@dataclass
class Served:
    """What the scorer answered for one request."""

    version: str
    ts: float  # the request's event time
    seconds: float  # the HTTP round trip
    scores: dict[str, tuple[float, float]]  # anchor_id -> (p_ctr, p_ctcvr)
    degraded: bool


@dataclass
class PlayStats:
    events: int = 0
    days: int = 0
    requests: int = 0
    scored: int = 0
    score_errors: int = 0
    held_seconds: float = 0.0  # waiting for the workers (back-pressure)
    first_ts: float | None = None
    last_ts: float | None = None
    progress: list[tuple[float, float]] = field(default_factory=list)  # (wall, event ts)
    served: dict[str, Served] = field(default_factory=dict)  # request_id -> answer
    truth: list[dict[str, Any]] = field(default_factory=list)
    published: list[tuple[str, bytes]] = field(default_factory=list)  # user topics, as sent

    def wall_at(self, ts: float) -> float | None:
        """The wall-clock time the publisher first passed event time ``ts``."""
        for wall, published in self.progress:
            if published >= ts:
                return wall
        return None


class RecordingRanker:
    """The simulator's ranker that also remembers each request's retrieved candidates."""

    def __init__(self, ranker: Ranker) -> None:
        self.ranker = ranker
        self.candidates: dict[str, list[str]] = {}

    def __call__(
        self, request_id: str, user_id: str, candidates: list[str], ts: float
    ) -> list[str]:
        self.candidates[request_id] = list(candidates)
        return self.ranker(request_id, user_id, candidates, ts)


def scored_request(request_id: str, fraction: float) -> bool:
    """A stable choice of the requests the scorer serves (the same ones on every run)."""
    return zlib.crc32(request_id.encode()) % 10_000 < fraction * 10_000


class Player:
    """Publishes a world's traffic day by day; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        world: World,
        seed: int,
        *,
        speed: float,
        max_ahead_seconds: float,
        watermark: Callable[[], float | None],
        scorer_url: str | None,
        score_fraction: float,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.speed = speed
        self.max_ahead = max_ahead_seconds
        self.watermark = watermark
        self.score_fraction = score_fraction
        self.stop = stop
        self.ranker = RecordingRanker(popularity_ranker(world))
        self.generator = TrafficGenerator(world, seed=seed, ranker=self.ranker)
        self.client = httpx.Client(base_url=scorer_url, timeout=10) if scorer_url else None
        self.stats = PlayStats()
        self.producer = KafkaProducer(acks=1, linger_ms=20, **settings.kafka.client_options())
        self.advancer = Advancer(settings)
        self.ticked = (-math.inf, 0.0)  # (event time, wall) of the last tick

    def days(self) -> Iterator[DayTraffic]:
        return self.generator.days()

    def play(self, days: Iterable[DayTraffic], on_day: Callable[[int], None]) -> PlayStats:
        stats = self.stats
        began = time.monotonic()
        for traffic in days:
            stats.truth.extend(traffic.truth)
            on_day(traffic.day)
            for ts, _, topic, key, document in traffic.events:
                if stats.first_ts is None:
                    stats.first_ts = ts
                self._pace(ts, began)
                if topic == "impressions" and document["position"] == 0:
                    self._serve(document)
                value = encode_document(document)
                self.producer.send(self.settings.topic(topic), key=key.encode(), value=value)
                if topic in USER_SOURCES:
                    stats.published.append((topic, value))
                stats.events += 1
                stats.last_ts = ts
                if stats.events % 500 == 0:
                    stats.progress.append((time.time(), ts))
                if self.stop():
                    break
            stats.days += 1
            if self.stop():
                break
        self.producer.flush()
        if stats.last_ts is not None:
            stats.progress.append((time.time(), stats.last_ts))
        return stats

    def close(self) -> None:
        self.advancer.close()
        self.producer.close()
        if self.client is not None:
            self.client.close()

    # -- pacing ------------------------------------------------------------------------------

    def _pace(self, ts: float, began: float) -> None:
        first = self.stats.first_ts or ts
        if self.speed > 0:
            due = began + self.stats.held_seconds + (ts - first) / self.speed
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        if self.stats.events % 200 == 0:
            self._tick(ts)
            self._hold(ts)

    def _tick(self, ts: float, force: bool = False) -> None:
        """Every ``TICK_EVENT_SECONDS`` of event time (a wall second apart at least, unless
        ``force``): all events before ``ts`` are sent, so every partition's watermark may move
        to ``ts`` less the lateness, even where a source is quiet."""
        last_ts, last_wall = self.ticked
        if ts <= last_ts or (
            not force and (ts - last_ts < TICK_EVENT_SECONDS or time.monotonic() - last_wall < 1.0)
        ):
            return
        self.producer.flush()
        self.advancer(ts - self.settings.labels.allowed_lateness)
        self.ticked = (ts, time.monotonic())

    def _hold(self, ts: float) -> None:
        """Wait while the slowest worker's watermark is more than ``max_ahead`` behind."""
        held = time.monotonic()
        while not self.stop():
            mark = self.watermark()
            if mark is None and self.stats.events < 20_000:
                break  # the workers have not reported yet: let the first events through
            if mark is not None and ts - mark <= self.max_ahead:
                break
            self._tick(ts, force=True)  # the workers may be waiting for a quiet source
            time.sleep(0.2)
        self.stats.held_seconds += time.monotonic() - held

    # -- serving -----------------------------------------------------------------------------

    def _serve(self, impression: dict[str, Any]) -> None:
        request_id = impression["request_id"]
        candidates = self.ranker.candidates.pop(request_id, None)
        self.stats.requests += 1
        if self.client is None or not candidates:
            return
        if not scored_request(request_id, self.score_fraction):
            return
        body = {
            "request_id": request_id,
            "user_id": impression["user_id"],
            "candidates": candidates,
            "scene": impression["scene"],
        }
        began = time.perf_counter()
        try:
            answer = self.client.post("/v1/rank", json=body)
        except httpx.HTTPError:
            self.stats.score_errors += 1
            return
        seconds = time.perf_counter() - began
        if answer.status_code == 503:
            return  # no model yet (the first day): the joiner uses the stream's features
        if answer.status_code != 200:
            self.stats.score_errors += 1
            return
        data = answer.json()
        self.stats.scored += 1
        self.stats.served[request_id] = Served(
            version=data["model_version"],
            ts=float(impression["ts"]),
            seconds=seconds,
            scores={i["anchor_id"]: (i["p_ctr"], i["p_ctcvr"]) for i in data["items"]},
            degraded=bool(data.get("degraded")),
        )
