"""The label join (DESIGN §4) as pure logic: a negative cache with cumulative attribution.

``JoinCore`` holds the pending samples of one partition in a plain mapping keyed by sample id
(``request_id:anchor_id``), each with its deadline inside, and is driven by two calls:

- ``process(event)`` adds an impression / click / watch / action and returns the samples that
  event causes (a new version when the conversion label turns 1, or the fake-negative copies);
- ``advance(watermark)`` closes every window whose end is before the watermark and returns
  the versions that closing emits.

The mapping is any ``MutableMapping`` (a faust table in the worker, a dict in tests); every
mutated value is assigned back to it. Nothing reads a clock: windows close on the watermark
the caller passes, which is derived from event time.

When every event arrives at or after the watermark of its arrival (within the allowed
lateness), the final labels are a function of the set of events alone, whatever their order.
"""

from __future__ import annotations

import functools
import heapq
import json
from collections.abc import Mapping, MutableMapping
from dataclasses import astuple, dataclass, field
from typing import Any, Literal

from features.catalog import pack_features, unpack_features
from streams.events import Action, Click, Event, Impression, Watch

CONVERTING_ACTIONS = frozenset({"follow", "gift"})


@dataclass(frozen=True)
class LabelRules:
    click_window: float = 300.0
    conversion_window: float = 1800.0
    effective_watch_seconds: float = 30.0
    allowed_lateness: float = 60.0
    policy: Literal["negative_cache", "fake_negative"] = "negative_cache"

    @classmethod
    def from_settings(cls, labels: Any) -> LabelRules:
        """From the ``[labels]`` settings section."""
        return cls(
            click_window=labels.click_window,
            conversion_window=labels.conversion_window,
            effective_watch_seconds=labels.effective_watch_seconds,
            allowed_lateness=labels.allowed_lateness,
            policy=labels.policy,
        )

    @property
    def horizon(self) -> float:
        """How long after its last deadline a closed sample is remembered (to spot late events)."""
        return self.allowed_lateness + self.click_window + self.conversion_window


@dataclass(frozen=True)
class Sample:
    """One version of a labelled sample (the §5 columns but the feature columns)."""

    sample_id: str
    version: int
    final: bool
    ts: float
    request_id: str
    user_id: str
    anchor_id: str
    click: int
    conversion: int
    watch_seconds: float
    features: dict[str, Any] | None = None


@dataclass
class JoinCounters:
    clicks: int = 0
    joined_clicks: int = 0
    late: dict[str, int] = field(default_factory=dict)
    orphans: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    samples_by_version: dict[int, int] = field(default_factory=dict)

    @property
    def join_rate(self) -> float:
        """Clicks that found their impression / all clicks decided so far."""
        return self.joined_clicks / self.clicks if self.clicks else 0.0

    def bump(self, table: dict[Any, int], key: Any, by: int = 1) -> None:
        table[key] = table.get(key, 0) + by

    def add(self, other: JoinCounters) -> None:
        """Add ``other``'s counts to these."""
        self.clicks += other.clicks
        self.joined_clicks += other.joined_clicks
        self.duplicates += other.duplicates
        for mine, theirs in (
            (self.late, other.late),
            (self.orphans, other.orphans),
            (self.samples_by_version, other.samples_by_version),
        ):
            for key, value in theirs.items():
                self.bump(mine, key, value)


# A pending entry is a list: JSON-able, so a faust table can store it, and small, because a
# worker holds a million of them in memory (bench/pending_memory.py). Its slots:
#   STATE      OPEN (click window open), CONVERTING (conversion window open) or CLOSED
#   DEADLINE   when advance() must look at it
#   LAST       the newest event ts while the impression has not come (its deadline), else None
#   IMP        the impression, JSON text of its fields in order, or None
#   FEATURES   its impression-time features (features.catalog.pack_features) or None
#   VERSION    versions emitted               CLICK_OUT / CONV_OUT  the labels last emitted
#   CLICKS {event_id: ts}   WATCH {event_id: [ts, seconds]}   ACTS {event_id: [ts, action]},
#              each None until its first event
# A closed sample leaves a tombstone [CLOSED, deadline, ids] for `horizon` seconds, ids the
# event ids it saw as JSON text, so an event that arrives after its window closed is
# recognised as late (or, when its id is there, as a duplicate).
STATE, DEADLINE, LAST, IMP, FEATURES, VERSION, CLICK_OUT, CONV_OUT, CLICKS, WATCH, ACTS = range(11)
OPEN, CONVERTING, CLOSED = 0, 1, 2
_IDS = 2  # a tombstone's third slot


def _pack_impression(event: Impression) -> str:
    return json.dumps(astuple(event), separators=(",", ":"))


def _new_entry(ts: float) -> list[Any]:
    return [OPEN, None, ts, None, None, 0, 0, 0, None, None, None]


def _events(entry: list[Any], slot: int) -> dict[str, Any]:
    """The entry's clicks, watch or actions (an empty dict when there are none yet)."""
    return entry[slot] or {}


def _imp(entry: list[Any]) -> Impression | None:
    return None if entry[IMP] is None else _unpack_impression(entry[IMP])


@functools.lru_cache(maxsize=4096)
def _unpack_impression(text: str) -> Impression:
    # Cached: one event reads its entry's impression several times (seen, labels, deadline).
    return Impression(*json.loads(text))


class JoinCore:
    """The join for one partition's pending samples (see the module docstring)."""

    def __init__(self, rules: LabelRules, pending: MutableMapping[str, list[Any]]) -> None:
        self.rules = rules
        self.pending = pending
        self.counters = JoinCounters()
        self.watermark = float("-inf")
        self._expiry: list[tuple[float, str]] = []
        self.rebuild_index()

    def rebuild_index(self) -> None:
        """Rebuild the in-memory expiry heap from the table (after start or recovery)."""
        self._expiry = [(entry[DEADLINE], key) for key, entry in self.pending.items()]
        heapq.heapify(self._expiry)

    def open_count(self) -> int:
        """Samples still pending (tombstones aside): the negative cache's size."""
        return sum(1 for entry in self.pending.values() if entry[STATE] != CLOSED)

    def watched(self, request_id: str, anchor_id: str) -> bool:
        """Whether a pending or closed sample has seen watch time (or is closed)."""
        entry = self.pending.get(f"{request_id}:{anchor_id}")
        return entry is not None and (entry[STATE] == CLOSED or bool(entry[WATCH]))

    # -- events -----------------------------------------------------------------------------

    def process(self, event: Event, features: Mapping[str, Any] | None = None) -> list[Sample]:
        """Add one event; return the samples it causes right away.

        ``features`` are the impression-time features, given with impressions only.
        """
        if not isinstance(event, Impression | Click | Watch | Action):
            return []
        key = f"{event.request_id}:{event.anchor_id}"
        kind = type(event).__name__.lower()
        entry = self.pending.get(key)
        if entry is not None and entry[STATE] == CLOSED:
            if event.event_id in json.loads(entry[_IDS]):
                self.counters.duplicates += 1
                return []
            return self._outside(kind, event.ts)
        if entry is None:
            # The deadline a new entry would get (see _deadline): already past means late.
            rules = self.rules
            wait = rules.click_window if isinstance(event, Impression) else rules.allowed_lateness
            if event.ts + wait < self.watermark:
                return self._late(kind)
            entry = _new_entry(event.ts)
        elif self._seen(entry, event.event_id):
            self.counters.duplicates += 1
            return []
        if isinstance(event, Click) and entry[STATE] != OPEN:
            return self._outside(kind, event.ts)  # the click window closed
        if entry[IMP] is None:
            entry[LAST] = max(entry[LAST], event.ts)
        out: list[Sample] = []
        if isinstance(event, Impression):
            out = self._impression(key, entry, event, features)
        else:
            value: Any
            if isinstance(event, Click):
                slot, value = CLICKS, event.ts
            elif isinstance(event, Watch):
                slot, value = WATCH, [event.ts, event.seconds]
            else:
                slot, value = ACTS, [event.ts, event.action]
            events = _events(entry, slot)
            events[event.event_id] = value
            entry[slot] = events
            out = self._progress(key, entry)
        self._schedule(key, entry)
        return out

    @staticmethod
    def _seen(entry: list[Any], event_id: str) -> bool:
        imp = _imp(entry)
        return (imp is not None and imp.event_id == event_id) or any(
            event_id in _events(entry, slot) for slot in (CLICKS, WATCH, ACTS)
        )

    def _impression(
        self,
        key: str,
        entry: list[Any],
        event: Impression,
        features: Mapping[str, Any] | None,
    ) -> list[Sample]:
        current = _imp(entry)
        if current is not None:
            # A second impression of the same sample is a duplicate. The earliest
            # (ts, event_id) is kept while nothing was emitted, so order does not matter.
            self.counters.duplicates += 1
            if entry[VERSION] > 0 or (current.ts, current.event_id) <= (event.ts, event.event_id):
                return []
        entry[IMP] = _pack_impression(event)
        entry[LAST] = None  # only an entry without its impression needs it
        entry[FEATURES] = None if features is None else pack_features(features)
        if self.rules.policy == "fake_negative":
            click, conversion = self._labels(entry)
            return [self._emit(key, entry, click, conversion, final=False)]
        return []

    def _progress(self, key: str, entry: list[Any]) -> list[Sample]:
        """A new version when a label improved on what was last emitted.

        negative_cache: only after version 1 (the click window closed), when conversion turns 1.
        fake_negative: when the click comes (the positive copy), and when conversion turns 1.
        """
        if entry[IMP] is None or entry[VERSION] == 0:
            return []
        click, conversion = self._labels(entry)
        if (click, conversion) > (entry[CLICK_OUT], entry[CONV_OUT]):
            return [self._emit(key, entry, click, conversion, final=False)]
        return []

    # -- labels -----------------------------------------------------------------------------

    def _click_ts(self, entry: list[Any]) -> float | None:
        """The earliest click joining the impression, or None."""
        imp = _imp(entry)
        if imp is None:
            return None
        lo, hi = imp.ts - self.rules.allowed_lateness, imp.ts + self.rules.click_window
        joining = [ts for ts in _events(entry, CLICKS).values() if lo <= ts <= hi]
        return min(joining) if joining else None

    def _window_watch(self, entry: list[Any]) -> tuple[float | None, float, bool]:
        """(t_click, watched seconds, converting action) inside the conversion window."""
        t_click = self._click_ts(entry)
        if t_click is None:
            return None, 0.0, False
        end = t_click + self.rules.conversion_window
        watched = float(sum(s for ts, s in _events(entry, WATCH).values() if t_click <= ts <= end))
        acted = any(
            a in CONVERTING_ACTIONS and t_click <= ts <= end
            for ts, a in _events(entry, ACTS).values()
        )
        return t_click, watched, acted

    def _labels(self, entry: list[Any]) -> tuple[int, int]:
        t_click, watched, acted = self._window_watch(entry)
        if t_click is None:
            return 0, 0
        return 1, int(watched >= self.rules.effective_watch_seconds or acted)

    # -- windows ----------------------------------------------------------------------------

    def _deadline(self, entry: list[Any]) -> float:
        rules = self.rules
        imp = _imp(entry)
        if imp is None:
            # Without its impression it waits until no on-time impression could still join:
            # an impression comes at most allowed_lateness after its click, watch or action.
            return float(entry[LAST] + rules.allowed_lateness)
        if entry[STATE] == OPEN:
            return float(imp.ts + rules.click_window)
        t_click = self._click_ts(entry)
        assert t_click is not None  # CONVERTING only with a click
        return float(t_click + rules.conversion_window)

    def _schedule(self, key: str, entry: list[Any]) -> None:
        deadline = self._deadline(entry)
        if deadline != entry[DEADLINE]:
            entry[DEADLINE] = deadline
            heapq.heappush(self._expiry, (deadline, key))
        self.pending[key] = entry  # assign back: a table only persists what is set

    def advance(self, watermark: float) -> list[Sample]:
        """Move the watermark forward and close every window that ends before it."""
        if watermark <= self.watermark:
            return []
        self.watermark = watermark
        out: list[Sample] = []
        while self._expiry and self._expiry[0][0] < watermark:
            deadline, key = heapq.heappop(self._expiry)
            entry = self.pending.get(key)
            if entry is None or entry[DEADLINE] != deadline:
                continue  # stale: the entry moved on or is gone
            out.extend(self._close(key, entry))
        return out

    def _close(self, key: str, entry: list[Any]) -> list[Sample]:
        if entry[STATE] == CLOSED:
            del self.pending[key]
            return []
        if entry[IMP] is None:
            self._count_orphans(entry)
            del self.pending[key]
            return []
        click, conversion = self._labels(entry)
        if entry[STATE] == OPEN:
            self._count_clicks(entry)
            if click:
                entry[STATE] = CONVERTING
                out = []
                improved = (click, conversion) > (entry[CLICK_OUT], entry[CONV_OUT])
                if entry[VERSION] == 0 or improved:
                    out.append(self._emit(key, entry, click, conversion, final=False))
                self._schedule(key, entry)
                return out
        sample = self._emit(key, entry, click, conversion, final=True)
        self._tombstone(key, entry)
        return [sample]

    def _count_clicks(self, entry: list[Any]) -> None:
        """At click-window close: clicks in the window joined, the others did not."""
        counters = self.counters
        imp = _imp(entry)
        assert imp is not None
        clicks = _events(entry, CLICKS)
        lo, hi = imp.ts - self.rules.allowed_lateness, imp.ts + self.rules.click_window
        joined = sum(1 for ts in clicks.values() if lo <= ts <= hi)
        counters.clicks += len(clicks)
        counters.joined_clicks += joined
        if len(clicks) > joined:
            counters.bump(counters.orphans, "click", len(clicks) - joined)

    def _count_orphans(self, entry: list[Any]) -> None:
        counters = self.counters
        counters.clicks += len(_events(entry, CLICKS))
        for slot, kind in ((CLICKS, "click"), (WATCH, "watch"), (ACTS, "action")):
            if entry[slot]:
                counters.bump(counters.orphans, kind, len(entry[slot]))

    def _tombstone(self, key: str, entry: list[Any]) -> None:
        deadline = entry[DEADLINE] + self.rules.horizon
        imp = _imp(entry)
        assert imp is not None
        # The ids it saw, so a replayed event (after a restart) is a duplicate, not "late".
        ids = [imp.event_id, *(i for slot in (CLICKS, WATCH, ACTS) for i in _events(entry, slot))]
        self.pending[key] = [CLOSED, deadline, json.dumps(ids, separators=(",", ":"))]
        heapq.heappush(self._expiry, (deadline, key))

    def _late(self, kind: str) -> list[Sample]:
        self.counters.bump(self.counters.late, kind)
        if kind == "click":
            self.counters.clicks += 1
        return []

    def _outside(self, kind: str, ts: float) -> list[Sample]:
        """An event for a sample whose window closed: late if it is behind the watermark,
        else on time but outside every window of its sample (an orphan). Either way it
        changes no label."""
        if ts < self.watermark:
            return self._late(kind)
        self.counters.bump(self.counters.orphans, kind)
        if kind == "click":
            self.counters.clicks += 1
        return []

    def _emit(
        self, key: str, entry: list[Any], click: int, conversion: int, *, final: bool
    ) -> Sample:
        entry[VERSION] += 1
        entry[CLICK_OUT], entry[CONV_OUT] = click, conversion
        self.counters.bump(self.counters.samples_by_version, entry[VERSION])
        imp = _imp(entry)
        assert imp is not None
        _, watched, _ = self._window_watch(entry)
        return Sample(
            sample_id=key,
            version=entry[VERSION],
            final=final,
            ts=imp.ts,
            request_id=imp.request_id,
            user_id=imp.user_id,
            anchor_id=imp.anchor_id,
            click=click,
            conversion=conversion,
            watch_seconds=watched,
            features=None if entry[FEATURES] is None else unpack_features(entry[FEATURES]),
        )
