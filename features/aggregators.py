"""Pure event-time aggregators: windowed counts, decayed rates, recent-item lists, sessions.

No I/O and no wall clock: each object is updated with ``(ts, value)`` and read at an event
time ``now``. The windowed sums, decayed rates and recent-item lists end in the same state
whatever the order of their updates (within their horizon), so events that arrive out of order
give the same features; ``Sessions`` ignores an update older than its newest. Each has
``to_state`` / ``from_state`` (plain JSON-able values) for the stream tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WindowedSum:
    """Sum of values over the last ``window`` seconds of event time, in ``buckets`` buckets.

    An update at ``ts`` lands in bucket ``floor(ts / (window / buckets))``. Read at ``now``,
    the sum covers the current bucket and the ``buckets - 1`` before it, so the window slides
    one bucket at a time (at most ``window / buckets`` seconds wider than ``window``).
    Buckets that slid out of the window of the newest update are dropped.

    >>> clicks = WindowedSum(window=300, buckets=5)
    >>> for ts in (0, 30, 61, 299):
    ...     clicks.add(ts)
    >>> clicks.total(299)
    4.0
    >>> clicks.total(330)  # the bucket [0, 60) has slid out
    2.0
    >>> clicks.total(1000)
    0.0
    """

    window: float
    buckets: int = 12
    sums: dict[int, float] = field(default_factory=dict)
    newest: int | None = None

    @property
    def width(self) -> float:
        return self.window / self.buckets

    def _bucket(self, ts: float) -> int:
        return math.floor(ts / self.width)

    def add(self, ts: float, value: float | None = 1.0) -> None:
        """Add ``value`` at event time ``ts``; a missing value (None) changes nothing."""
        if value is None:
            return
        bucket = self._bucket(ts)
        if self.newest is not None and bucket <= self.newest - self.buckets:
            return  # older than anything the window can still show
        self.sums[bucket] = self.sums.get(bucket, 0.0) + value
        if self.newest is None or bucket > self.newest:
            self.newest = bucket
            oldest = bucket - self.buckets
            for stale in [b for b in self.sums if b <= oldest]:
                del self.sums[stale]

    def total(self, now: float) -> float:
        current = self._bucket(now)
        return float(sum(v for b, v in self.sums.items() if current - self.buckets < b <= current))

    def to_state(self) -> dict[str, Any]:
        return {"s": [[b, v] for b, v in sorted(self.sums.items())], "n": self.newest}

    @classmethod
    def from_state(cls, window: float, buckets: int, state: dict[str, Any] | None) -> WindowedSum:
        counter = cls(window=window, buckets=buckets)
        if state:
            counter.sums = {int(b): float(v) for b, v in state["s"]}
            counter.newest = state["n"]
        return counter


@dataclass
class DecayedRate:
    """An exponentially decayed ratio such as a real-time CTR, with a prior.

    Numerator and denominator decay with ``half_life`` seconds of event time; an update that
    arrives out of order is decayed to the newest time, so the order of updates does not matter.
    ``rate(now) = (num + prior_rate * prior_weight) / (den + prior_weight)``.

    >>> ctr = DecayedRate(half_life=3600, prior_rate=0.1, prior_weight=1.0)
    >>> ctr.add(0, numerator=1, denominator=1)
    >>> ctr.add(3600, numerator=0, denominator=1)  # the first impression now weighs 1/2
    >>> round(ctr.numerator, 3), round(ctr.denominator, 3)
    (0.5, 1.5)
    >>> round(ctr.rate(3600), 4)  # (0.5 + 0.1) / (1.5 + 1)
    0.24
    """

    half_life: float
    prior_rate: float = 0.0
    prior_weight: float = 0.0
    numerator: float = 0.0
    denominator: float = 0.0
    at: float | None = None

    def _factor(self, seconds: float) -> float:
        return math.exp2(-seconds / self.half_life)

    def add(
        self, ts: float, numerator: float | None = 0.0, denominator: float | None = 0.0
    ) -> None:
        """Add at event time ``ts``; a missing part (None) counts as 0."""
        numerator, denominator = numerator or 0.0, denominator or 0.0
        if self.at is None or ts >= self.at:
            if self.at is not None:
                factor = self._factor(ts - self.at)
                self.numerator *= factor
                self.denominator *= factor
            self.at = ts
            self.numerator += numerator
            self.denominator += denominator
        else:
            factor = self._factor(self.at - ts)
            self.numerator += numerator * factor
            self.denominator += denominator * factor

    def rate(self, now: float) -> float:
        factor = 1.0 if self.at is None or now <= self.at else self._factor(now - self.at)
        num = self.numerator * factor + self.prior_rate * self.prior_weight
        den = self.denominator * factor + self.prior_weight
        return num / den if den > 0 else self.prior_rate

    def to_state(self) -> list[float | None]:
        return [self.numerator, self.denominator, self.at]

    @classmethod
    def from_state(
        cls, half_life: float, prior_rate: float, prior_weight: float, state: list[Any] | None
    ) -> DecayedRate:
        rate = cls(half_life=half_life, prior_rate=prior_rate, prior_weight=prior_weight)
        if state:
            rate.numerator, rate.denominator, rate.at = float(state[0]), float(state[1]), state[2]
        return rate


@dataclass
class RecentItems:
    """The ``capacity`` most recent distinct items by event time (newest first).

    An item seen again keeps its latest time; an update older than everything kept, when
    full, is dropped. The result is the top ``capacity`` items by their latest time, whatever
    the order of updates.

    >>> entered = RecentItems(capacity=3)
    >>> for ts, anchor in ((1, "a"), (2, "b"), (5, "a"), (3, "c"), (4, "d")):
    ...     entered.add(ts, anchor)
    >>> entered.items()
    ['a', 'd', 'c']
    """

    capacity: int
    entries: dict[str, float] = field(default_factory=dict)

    def add(self, ts: float, item: str) -> None:
        if ts <= self.entries.get(item, -math.inf):
            return
        self.entries[item] = ts
        if len(self.entries) > self.capacity:
            oldest = min(self.entries.items(), key=lambda kv: (kv[1], kv[0]))[0]
            del self.entries[oldest]

    def items(self) -> list[str]:
        return [k for k, _ in sorted(self.entries.items(), key=lambda kv: (-kv[1], kv[0]))]

    def to_state(self) -> list[list[Any]]:
        return [[k, v] for k, v in sorted(self.entries.items())]

    @classmethod
    def from_state(cls, capacity: int, state: list[list[Any]] | None) -> RecentItems:
        recent = cls(capacity=capacity)
        recent.entries = {str(k): float(v) for k, v in state or []}
        return recent


@dataclass
class Sessions:
    """Activity sessions split by ``gap`` seconds of inactivity; knows when the previous ended.

    ``since_previous(now)`` is the time from the end of the previous session to ``now``, the
    "time since last session" feature (-1 when the user has had no earlier session).

    >>> s = Sessions(gap=1800)
    >>> for ts in (0, 600, 5000, 5100):
    ...     s.add(ts)
    >>> s.since_previous(5200)  # the previous session ended at 600
    4600.0
    >>> Sessions(gap=1800).since_previous(10.0)
    -1.0
    """

    gap: float
    last: float | None = None
    previous_end: float | None = None

    def add(self, ts: float) -> None:
        if self.last is None:
            self.last = ts
        elif ts > self.last:
            if ts - self.last > self.gap:
                self.previous_end = self.last
            self.last = ts

    def since_previous(self, now: float) -> float:
        return -1.0 if self.previous_end is None else float(now - self.previous_end)

    def to_state(self) -> list[float | None]:
        return [self.last, self.previous_end]

    @classmethod
    def from_state(cls, gap: float, state: list[Any] | None) -> Sessions:
        sessions = cls(gap=gap)
        if state:
            sessions.last, sessions.previous_end = state[0], state[1]
        return sessions
