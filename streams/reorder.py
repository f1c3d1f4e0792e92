"""Events of one partition put back in event-time order before they touch any state.

A worker reads the impressions, clicks, watch and actions topics of a partition at different
paces: during a backlog a thin topic runs hours ahead of a fat one. Applied as read, a user's
click would reach the user and user×anchor features before the impression it followed, and
the sample taken at that impression would carry its own future. So each event waits here
until every source has been read past it (``PartitionWatermark.release_bound``) and leaves in
``(ts, topic rank, offset)`` order; the state then sees the partition's events as they happened.

The held events live in the join table (``<partition>/b/<topic>:<offset>``) next to the
watermark that was read along with them, so a restart holds exactly what the crashed worker
held. Only what is still held at the end of a batch is written (``flush``): an event read and
released in the same batch costs no table write.

>>> from streams.events import parse_event
>>> held = {}
>>> buffer = ReorderBuffer(held, parse_event)
>>> click = b'{"event_id":"c1","ts":120.0,"user_id":"u1","anchor_id":"a1","request_id":"r1"}'
>>> imp = (b'{"event_id":"i1","ts":100.0,"user_id":"u1","anchor_id":"a1","request_id":"r1",'
...        b'"scene":"home","position":0}')
>>> buffer.add("clicks", 7, parse_event("clicks", click), click)
>>> buffer.add("impressions", 3, parse_event("impressions", imp), imp)
>>> [(topic, offset) for topic, offset, _ in buffer.release(110.0)]
[('impressions', 3)]
>>> buffer.flush(); sorted(held)
['clicks:7']
>>> [(topic, offset) for topic, offset, _ in buffer.release(float("inf"))]
[('clicks', 7)]
>>> buffer.flush(); held
{}
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, MutableMapping
from typing import Any

from streams.events import Event, Invalid

#: Among events of equal time, the order in which they are applied: an impression first, so
#: a click at the very same instant is not in that impression's features.
RANK = {"impressions": 0, "clicks": 1, "watch": 2, "actions": 3}

Released = tuple[str, int, Event]  # (topic, offset, event)


class ReorderBuffer:
    """Held events of one partition, released in event-time order up to a bound."""

    def __init__(
        self,
        store: MutableMapping[str, Any],
        parse: Callable[[str, bytes], Event | Invalid],
    ) -> None:
        self.store = store
        self._heap: list[tuple[float, int, int, str]] = []
        self._events: dict[str, Event] = {}
        self._unstored: dict[str, tuple[str, int, bytes]] = {}
        # After a start or a recovery: what the table holds is what is held.
        for key, doc in list(store.items()):
            event = parse(doc["t"], doc["v"].encode())
            if isinstance(event, Invalid):  # it parsed when it was read: the table is damaged
                raise ValueError(f"held event {key} no longer parses: {event.reason}")
            self._push(key, doc["t"], int(doc["o"]), event)

    def __len__(self) -> int:
        return len(self._events)

    def add(self, topic: str, offset: int, event: Event, raw: bytes) -> None:
        """Hold ``event``; a message already held (read again after a restart) is ignored."""
        key = f"{topic}:{offset}"
        if key in self._events:
            return
        self._push(key, topic, offset, event)
        self._unstored[key] = (topic, offset, raw)

    def _push(self, key: str, topic: str, offset: int, event: Event) -> None:
        self._events[key] = event
        heapq.heappush(self._heap, (event.ts, RANK[topic], offset, topic))

    def release(self, bound: float) -> list[Released]:
        """Every held event at or before ``bound``, oldest first, no longer held."""
        out: list[Released] = []
        while self._heap and self._heap[0][0] <= bound:
            _, _, offset, topic = heapq.heappop(self._heap)
            key = f"{topic}:{offset}"
            out.append((topic, offset, self._events.pop(key)))
            if self._unstored.pop(key, None) is None:
                del self.store[key]
        return out

    def flush(self) -> None:
        """Write the events still held that the table does not have yet."""
        for key, (topic, offset, raw) in self._unstored.items():
            self.store[key] = {"t": topic, "o": offset, "v": raw.decode("utf-8")}
        self._unstored.clear()
