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

import heapq
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

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


# The pending value is a plain dict (JSON-able, so a faust table can store it):
#   imp: [event_id, ts, user_id, scene, position] | None     the impression
#   features: {...} | None                                   its impression-time features
#   clicks: {event_id: ts}       watch: {event_id: [ts, seconds]}   acts: {event_id: [ts, action]}
#   ids: [request_id, anchor_id]     last: the newest event ts
#   stage: 0 click window open, 1 conversion window open
#   version: versions emitted    click_out / conv_out: the labels last emitted
#   deadline: when advance() must look at it
# A closed sample leaves a tombstone {"closed": True, "deadline": ..., "ids": [...]} for
# `horizon` seconds, so an event that arrives after its window closed is recognised as late
# (or, when its id is there, as a duplicate).

OPEN, CONVERTING = 0, 1


def _new_entry(request_id: str, anchor_id: str, ts: float) -> dict[str, Any]:
    return {
        "ids": [request_id, anchor_id],
        "imp": None,
        "features": None,
        "clicks": {},
        "watch": {},
        "acts": {},
        "last": ts,
        "stage": OPEN,
        "version": 0,
        "click_out": 0,
        "conv_out": 0,
        "deadline": None,
    }


class JoinCore:
    """The join for one partition's pending samples (see the module docstring)."""

    def __init__(self, rules: LabelRules, pending: MutableMapping[str, dict[str, Any]]) -> None:
        self.rules = rules
        self.pending = pending
        self.counters = JoinCounters()
        self.watermark = float("-inf")
        self._expiry: list[tuple[float, str]] = []
        self.rebuild_index()

    def rebuild_index(self) -> None:
        """Rebuild the in-memory expiry heap from the table (after start or recovery)."""
        self._expiry = [(entry["deadline"], key) for key, entry in self.pending.items()]
        heapq.heapify(self._expiry)

    def open_count(self) -> int:
        """Samples still pending (tombstones aside): the negative cache's size."""
        return sum(1 for entry in self.pending.values() if not entry.get("closed"))

    # -- events -----------------------------------------------------------------------------

    def process(self, event: Event, features: dict[str, Any] | None = None) -> list[Sample]:
        """Add one event; return the samples it causes right away.

        ``features`` are the impression-time features, given with impressions only.
        """
        if not isinstance(event, Impression | Click | Watch | Action):
            return []
        key = f"{event.request_id}:{event.anchor_id}"
        kind = type(event).__name__.lower()
        entry = self.pending.get(key)
        if entry is not None and entry.get("closed"):
            if event.event_id in entry.get("ids", ()):
                self.counters.duplicates += 1
                return []
            return self._outside(kind, event.ts)
        if entry is None:
            # The deadline a new entry would get (see _deadline): already past means late.
            rules = self.rules
            wait = rules.click_window if isinstance(event, Impression) else rules.allowed_lateness
            if event.ts + wait < self.watermark:
                return self._late(kind)
            entry = _new_entry(event.request_id, event.anchor_id, event.ts)
        elif self._seen(entry, event.event_id):
            self.counters.duplicates += 1
            return []
        if isinstance(event, Click) and entry["stage"] != OPEN:
            return self._outside(kind, event.ts)  # the click window closed
        entry["last"] = max(entry["last"], event.ts)
        out: list[Sample] = []
        if isinstance(event, Impression):
            out = self._impression(key, entry, event, features)
        elif isinstance(event, Click):
            entry["clicks"][event.event_id] = event.ts
            out = self._progress(key, entry)
        elif isinstance(event, Watch):
            entry["watch"][event.event_id] = [event.ts, event.seconds]
            out = self._progress(key, entry)
        else:
            entry["acts"][event.event_id] = [event.ts, event.action]
            out = self._progress(key, entry)
        self._schedule(key, entry)
        return out

    @staticmethod
    def _seen(entry: dict[str, Any], event_id: str) -> bool:
        imp = entry["imp"]
        return (
            (imp is not None and imp[0] == event_id)
            or event_id in entry["clicks"]
            or event_id in entry["watch"]
            or event_id in entry["acts"]
        )

    def _impression(
        self, key: str, entry: dict[str, Any], event: Impression, features: dict[str, Any] | None
    ) -> list[Sample]:
        current = entry["imp"]
        if current is not None:
            # A second impression of the same sample is a duplicate. The earliest
            # (ts, event_id) is kept while nothing was emitted, so order does not matter.
            self.counters.duplicates += 1
            if entry["version"] > 0 or (current[1], current[0]) <= (event.ts, event.event_id):
                return []
        entry["imp"] = [event.event_id, event.ts, event.user_id, event.scene, event.position]
        entry["features"] = features
        if self.rules.policy == "fake_negative":
            click, conversion = self._labels(entry)
            return [self._emit(key, entry, click, conversion, final=False)]
        return []

    def _progress(self, key: str, entry: dict[str, Any]) -> list[Sample]:
        """A new version when a label improved on what was last emitted.

        negative_cache: only after version 1 (the click window closed), when conversion turns 1.
        fake_negative: when the click comes (the positive copy), and when conversion turns 1.
        """
        if entry["imp"] is None or entry["version"] == 0:
            return []
        click, conversion = self._labels(entry)
        if (click, conversion) > (entry["click_out"], entry["conv_out"]):
            return [self._emit(key, entry, click, conversion, final=False)]
        return []

    # -- labels -----------------------------------------------------------------------------

    def _click_ts(self, entry: dict[str, Any]) -> float | None:
        """The earliest click joining the impression, or None."""
        imp = entry["imp"]
        if imp is None:
            return None
        lo, hi = imp[1] - self.rules.allowed_lateness, imp[1] + self.rules.click_window
        joining = [ts for ts in entry["clicks"].values() if lo <= ts <= hi]
        return min(joining) if joining else None

    def _window_watch(self, entry: dict[str, Any]) -> tuple[float | None, float, bool]:
        """(t_click, watched seconds, converting action) inside the conversion window."""
        t_click = self._click_ts(entry)
        if t_click is None:
            return None, 0.0, False
        end = t_click + self.rules.conversion_window
        watched = float(sum(s for ts, s in entry["watch"].values() if t_click <= ts <= end))
        acted = any(
            a in CONVERTING_ACTIONS and t_click <= ts <= end for ts, a in entry["acts"].values()
        )
        return t_click, watched, acted

    def _labels(self, entry: dict[str, Any]) -> tuple[int, int]:
        t_click, watched, acted = self._window_watch(entry)
        if t_click is None:
            return 0, 0
        return 1, int(watched >= self.rules.effective_watch_seconds or acted)

    # -- windows ----------------------------------------------------------------------------

    def _deadline(self, entry: dict[str, Any]) -> float:
        rules = self.rules
        imp = entry["imp"]
        if imp is None:
            # Without its impression it waits until no on-time impression could still join:
            # an impression comes at most allowed_lateness after its click, watch or action.
            return float(entry["last"] + rules.allowed_lateness)
        if entry["stage"] == OPEN:
            return float(imp[1] + rules.click_window)
        t_click = self._click_ts(entry)
        assert t_click is not None  # stage CONVERTING only with a click
        return float(t_click + rules.conversion_window)

    def _schedule(self, key: str, entry: dict[str, Any]) -> None:
        deadline = self._deadline(entry)
        if deadline != entry["deadline"]:
            entry["deadline"] = deadline
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
            if entry is None or entry["deadline"] != deadline:
                continue  # stale: the entry moved on or is gone
            out.extend(self._close(key, entry))
        return out

    def _close(self, key: str, entry: dict[str, Any]) -> list[Sample]:
        if entry.get("closed"):
            del self.pending[key]
            return []
        if entry["imp"] is None:
            self._count_orphans(entry)
            del self.pending[key]
            return []
        click, conversion = self._labels(entry)
        if entry["stage"] == OPEN:
            self._count_clicks(entry)
            if click:
                entry["stage"] = CONVERTING
                out = []
                improved = (click, conversion) > (entry["click_out"], entry["conv_out"])
                if entry["version"] == 0 or improved:
                    out.append(self._emit(key, entry, click, conversion, final=False))
                self._schedule(key, entry)
                return out
        sample = self._emit(key, entry, click, conversion, final=True)
        self._tombstone(key, entry)
        return [sample]

    def _count_clicks(self, entry: dict[str, Any]) -> None:
        """At click-window close: clicks in the window joined, the others did not."""
        counters = self.counters
        imp_ts = entry["imp"][1]
        lo, hi = imp_ts - self.rules.allowed_lateness, imp_ts + self.rules.click_window
        joined = sum(1 for ts in entry["clicks"].values() if lo <= ts <= hi)
        counters.clicks += len(entry["clicks"])
        counters.joined_clicks += joined
        if len(entry["clicks"]) > joined:
            counters.bump(counters.orphans, "click", len(entry["clicks"]) - joined)

    def _count_orphans(self, entry: dict[str, Any]) -> None:
        counters = self.counters
        counters.clicks += len(entry["clicks"])
        for name, kind in (("clicks", "click"), ("watch", "watch"), ("acts", "action")):
            if entry[name]:
                counters.bump(counters.orphans, kind, len(entry[name]))

    def _tombstone(self, key: str, entry: dict[str, Any]) -> None:
        deadline = entry["deadline"] + self.rules.horizon
        # The ids it saw, so a replayed event (after a restart) is a duplicate, not "late".
        ids = [entry["imp"][0], *entry["clicks"], *entry["watch"], *entry["acts"]]
        self.pending[key] = {"closed": True, "deadline": deadline, "ids": ids}
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
        self, key: str, entry: dict[str, Any], click: int, conversion: int, *, final: bool
    ) -> Sample:
        entry["version"] += 1
        entry["click_out"], entry["conv_out"] = click, conversion
        self.counters.bump(self.counters.samples_by_version, entry["version"])
        imp = entry["imp"]
        request_id, anchor_id = entry["ids"]
        _, watched, _ = self._window_watch(entry)
        return Sample(
            sample_id=key,
            version=entry["version"],
            final=final,
            ts=imp[1],
            request_id=request_id,
            user_id=imp[2],
            anchor_id=anchor_id,
            click=click,
            conversion=conversion,
            watch_seconds=watched,
            features=entry["features"],
        )
