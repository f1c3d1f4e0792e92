"""Per-partition event-time watermarks over several co-partitioned source topics.

A worker reads partition ``p`` of the impressions, clicks, watch and actions topics at
different paces (a fat topic lags a thin one by hours during a replay), so the watermark of
partition ``p`` follows the slowest of them: the smallest of each source's newest event time,
minus the allowed lateness. A source with no event yet holds the watermark back; a tick
(``liverank streams advance --to TS``) lifts it to ``TS`` once the worker has read every source
up to the end offsets the tick names, so an idle partition moves on and a replay can close all
of its windows. (A source merely "caught up" is not skipped: a producer that pauses and then
sends older events would otherwise see them counted late.)

>>> w = PartitionWatermark(sources=("impressions", "clicks"), lateness=60)
>>> w.observe("impressions", offset=0, ts=1000.0)
>>> w.value()  # clicks have said nothing yet
-inf
>>> w.observe("clicks", offset=0, ts=900.0)
>>> w.value()
840.0
>>> w.release_bound()  # events up to here can be applied in event-time order
900.0
>>> w.tick(ts=5000.0, end_offsets={"impressions": 1, "clicks": 1})
>>> w.value()
5000.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PartitionWatermark:
    sources: tuple[str, ...]
    lateness: float
    newest: dict[str, float] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    floor: float = -math.inf
    pending_ticks: list[tuple[float, dict[str, int]]] = field(default_factory=list)

    def observe(self, source: str, offset: int, ts: float) -> None:
        """A message of ``source`` at ``offset`` with event time ``ts`` was read."""
        if ts > self.newest.get(source, -math.inf):
            self.newest[source] = ts
        if offset > self.offsets.get(source, -1):
            self.offsets[source] = offset
        self._apply_ticks()

    def read_through(self, source: str, offset: int) -> None:
        """Everything of ``source`` up to ``offset`` was read (a message that was not an event)."""
        if offset > self.offsets.get(source, -1):
            self.offsets[source] = offset
        self._apply_ticks()

    def tick(self, ts: float, end_offsets: Mapping[str, int]) -> None:
        """Lift the watermark to ``ts`` once each source is read below its end offset."""
        self.pending_ticks.append((ts, dict(end_offsets)))
        self._apply_ticks()

    def _apply_ticks(self) -> None:
        if not self.pending_ticks:
            return
        remaining = []
        for ts, ends in self.pending_ticks:
            if all(self.offsets.get(s, -1) >= end - 1 for s, end in ends.items()):
                self.floor = max(self.floor, ts)
            else:
                remaining.append((ts, ends))
        self.pending_ticks = remaining

    def value(self) -> float:
        """The watermark: the slowest source's newest event time less the lateness, or the
        last tick's time when that is later."""
        return max(self.floor, self._slowest() - self.lateness)

    def release_bound(self, caught_up: Iterable[str] = ()) -> float:
        """Event time up to which every source has been read (``streams.reorder``).

        A source read in order has nothing left before its newest event, so events up to the
        slowest source's newest can be applied in event-time order; a tick vouches for its
        time. When every source is ``caught_up`` (read to its end right now) nothing read can
        be overtaken and everything goes. Never below ``value()``: an event still held is
        never late for the join once released.
        """
        if set(self.sources) <= set(caught_up):
            return math.inf
        return max(self.floor, self._slowest())

    def _slowest(self) -> float:
        return min(self.newest.get(s, -math.inf) for s in self.sources)

    def to_state(self) -> dict[str, Any]:
        return {
            "newest": self.newest,
            "offsets": self.offsets,
            "floor": None if self.floor == -math.inf else self.floor,
            "ticks": [[ts, ends] for ts, ends in self.pending_ticks],
        }

    @classmethod
    def from_state(
        cls, sources: tuple[str, ...], lateness: float, state: Mapping[str, Any] | None
    ) -> PartitionWatermark:
        mark = cls(sources=sources, lateness=lateness)
        if state:
            mark.newest = {k: float(v) for k, v in state["newest"].items()}
            mark.offsets = {k: int(v) for k, v in state["offsets"].items()}
            mark.floor = -math.inf if state["floor"] is None else float(state["floor"])
            mark.pending_ticks = [(float(ts), dict(ends)) for ts, ends in state["ticks"]]
        return mark
