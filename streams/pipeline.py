"""What a worker does with a batch of messages, free of faust.

``UserSide`` takes the messages of the user-keyed topics (and the control topic) and returns a
``UserBatch``: samples, dead letters, anchor activity, feature writes. It applies the events of
a partition in event-time order, whatever order the topics were read in (``streams.reorder``),
so no feature is read after its impression. Its state lives in plain mappings (faust tables in
the worker) behind ``Overlay``s, committed by ``commit()`` only after the worker has made the
batch's outputs durable. ``AnchorSide`` does the same for anchor
status and anchor activity. The faust shell (``streams.app``) only moves bytes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from features.request import candidate_features, with_context
from features.state import AnchorState, UserAnchorState, UserState
from snapshots.layout import WINDOW_SECONDS, window_closed, window_start
from snapshots.samples import SampleLander
from streams.events import (
    Action,
    AnchorStatus,
    Click,
    Event,
    Impression,
    Invalid,
    Watch,
    dead_letter,
    encode_document,
    parse_event,
    reason_kind,
)
from streams.join import JoinCore, JoinCounters, LabelRules, Sample
from streams.overlay import Overlay, PartitionView
from streams.reorder import Released, ReorderBuffer
from streams.watermark import PartitionWatermark

USER_SOURCES = ("impressions", "clicks", "watch", "actions")
log = logging.getLogger("liverank.streams")
# Batches a gap may be seen in before it is taken for a real hole in the log: after a seek,
# the consumer can still hand over messages it had fetched from the old position.
REWIND_ATTEMPTS = 50


@dataclass(frozen=True)
class Message:
    """One Kafka message as the worker read it."""

    topic: str  # without the prefix
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class StreamCounters:
    events_in: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0

    def bump(self, table: dict[str, int], key: str, by: int = 1) -> None:
        table[key] = table.get(key, 0) + by


@dataclass
class UserBatch:
    samples: dict[int, list[Sample]] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    activity: list[dict[str, Any]] = field(default_factory=list)
    users: dict[str, dict[str, float | str]] = field(default_factory=dict)
    user_anchor: dict[tuple[str, str], dict[str, float | str]] = field(default_factory=dict)
    watermarks: dict[int, float] = field(default_factory=dict)
    closed_windows: dict[int, list[float]] = field(default_factory=dict)
    rewind: dict[tuple[str, int], int] = field(default_factory=dict)
    """(topic, partition) -> offset to read again from: a gap between what the state has
    applied and what the consumer delivered (offsets committed past unapplied events)."""


@dataclass(frozen=True)
class Lookups:
    """What impressions need from outside the partition, fetched once per batch."""

    snapshots: Mapping[str, Mapping[str, Mapping[str, Any]]]  # request_id -> anchor_id -> features
    anchors: Mapping[str, Mapping[str, float | str]]  # anchor_id -> real-time anchor features
    user_profiles: Mapping[str, Mapping[str, str]]
    anchor_profiles: Mapping[str, Mapping[str, str]]


def closed_windows(
    next_window: float | None, first_ts: float | None, watermark: float, click_window: float
) -> tuple[list[float], float | None]:
    """Windows a partition can now mark complete, and the next one it will wait for.

    Windows are marked in order from the one holding the partition's earliest event, so a
    window in which the partition had no sample is marked too. An event earlier than
    ``next_window`` (a slower topic catching up) moves it back; an on-time event never falls
    in a window that is already complete, so nothing is marked twice in vain.

    >>> closed_windows(None, 1000.0, 2500.0, 300.0)
    ([900.0], 1800.0)
    >>> closed_windows(1800.0, None, 2500.0, 300.0)
    ([], 1800.0)
    """
    if first_ts is not None:
        earliest = window_start(first_ts)
        next_window = earliest if next_window is None else min(next_window, earliest)
    if next_window is None:
        return [], None
    windows = []
    while window_closed(next_window, watermark, click_window):
        windows.append(next_window)
        next_window += WINDOW_SECONDS
    return windows, next_window


def reject(
    message: Message,
    reason: str,
    topic_of: Callable[[str], str],
    counters: StreamCounters,
    dead: list[dict[str, Any]],
) -> None:
    """The one policy for a bad message: a dead letter with its reason, counted; go on."""
    counters.bump(counters.dead_letters, reason_kind(reason))
    dead.append(
        dead_letter(
            topic_of(message.topic), message.partition, message.offset, reason, message.value
        )
    )


def read_event(
    message: Message,
    max_bytes: int,
    topic_of: Callable[[str], str],
    counters: StreamCounters,
    dead: list[dict[str, Any]],
) -> Event | None:
    """The message's typed event, or None after rejecting it (see ``reject``)."""
    if message.value is None:
        reject(message, "empty message (no value)", topic_of, counters, dead)
        return None
    parsed = parse_event(message.topic, message.value, max_bytes)
    if isinstance(parsed, Invalid):
        reject(message, parsed.reason, topic_of, counters, dead)
        return None
    return parsed


Highwater = Callable[[str, int], int | None]
"""(source, partition) -> the offset after the last message in the log, None when unknown."""


class UserSide:
    """Features, label join and watermarks of the user-keyed partitions a worker owns."""

    def __init__(
        self,
        rules: LabelRules,
        tables: Mapping[str, MutableMapping[str, Any]],
        topic_of: Callable[[str], str],
        max_event_bytes: int = 65536,
    ) -> None:
        self.rules = rules
        self.join_table = Overlay(tables["join"])
        self.user_table = Overlay(tables["users"])
        self.pair_table = Overlay(tables["user_anchor"])
        self.topic_of = topic_of
        self.max_event_bytes = max_event_bytes
        self.cores: dict[int, JoinCore] = {}
        self.marks: dict[int, PartitionWatermark] = {}
        self.buffers: dict[int, ReorderBuffer] = {}
        self.counters = StreamCounters()
        self.retired = JoinCounters()
        self._users: dict[str, UserState] = {}
        self._pairs: dict[str, UserAnchorState] = {}
        self._first_ts: dict[int, float] = {}
        self._dirty_users: dict[str, float] = {}
        self._rewound: dict[tuple[str, int], tuple[int, int]] = {}  # (gap, times asked)
        self._dirty_pairs: dict[str, float] = {}
        self._batch: UserBatch | None = None
        self._due: dict[int, list[Released]] = {}
        self._touched: set[int] = set()

    # -- partitions --------------------------------------------------------------------------

    def core(self, partition: int) -> JoinCore:
        core = self.cores.get(partition)
        if core is None:
            # First use after start or after (re)assignment: rebuild from the tables.
            core = JoinCore(self.rules, PartitionView(self.join_table, partition, "s"))
            mark = PartitionWatermark.from_state(
                USER_SOURCES, self.rules.allowed_lateness, self.join_table.get(f"{partition}/mark")
            )
            core.watermark = mark.value()
            self.cores[partition], self.marks[partition] = core, mark
            self.buffers[partition] = ReorderBuffer(
                PartitionView(self.join_table, partition, "b"), self._parse
            )
        return core

    def _parse(self, topic: str, raw: bytes) -> Event | Invalid:
        return parse_event(topic, raw, self.max_event_bytes)

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions were revoked: drop what is cached about them."""
        for partition in partitions:
            core = self.cores.pop(partition, None)
            if core is not None:
                self.retired.add(core.counters)
            self.marks.pop(partition, None)
            self.buffers.pop(partition, None)

    def join_counters(self) -> JoinCounters:
        """This process's join counts: the partitions it owns and those it gave up."""
        total = JoinCounters()
        total.add(self.retired)
        for core in self.cores.values():
            total.add(core.counters)
        return total

    # -- a batch -----------------------------------------------------------------------------

    def process(
        self, messages: Sequence[Message], lookups: Lookups, highwater: Highwater | None = None
    ) -> UserBatch:
        """``hold``, ``release`` and ``apply``, for callers whose lookups are at hand."""
        self.hold(messages)
        self.release(highwater)
        return self.apply(lookups)

    def hold(self, messages: Sequence[Message]) -> None:
        """Read a batch: dead letters, watermarks, ticks; every event is held until every
        source of its partition has been read past it."""
        assert self._batch is None, "apply() the batch that was read first"
        batch = self._batch = UserBatch()
        self._touched = set()
        for message in messages:
            partition = message.partition
            self.core(partition)  # the partition's join, watermark and buffer, once
            mark = self.marks[partition]
            self._touched.add(partition)
            if not self._in_order(message, mark, batch):
                continue
            if message.topic == "control":
                self._control(message, mark)
            else:
                self._read_event(message, mark, batch)

    def at_end(self, highwater: Highwater) -> list[int]:
        """The partitions holding events whose sources are all read to ``highwater``."""
        return [
            partition
            for partition, buffer in self.buffers.items()
            if len(buffer)
            and len(self._caught_up(partition, self.marks[partition], highwater))
            == len(USER_SOURCES)
        ]

    def release(self, highwater: Highwater | None = None) -> list[Impression]:
        """Release what the held events' partitions have been read past. ``highwater`` tells
        when a partition's sources are all read to their end, so nothing read can be
        overtaken and every held event goes at once (a live worker's normal case)."""
        due = self._due = {}
        for partition, buffer in self.buffers.items():
            if partition in self._touched or len(buffer):
                mark = self.marks[partition]
                caught_up = self._caught_up(partition, mark, highwater) if highwater else ()
                due[partition] = buffer.release(mark.release_bound(caught_up))
        return [e for out in due.values() for _, _, e in out if isinstance(e, Impression)]

    @staticmethod
    def _caught_up(partition: int, mark: PartitionWatermark, highwater: Highwater) -> list[str]:
        caught_up = []
        for source in USER_SOURCES:
            end = highwater(source, partition)
            if end is not None and mark.offsets.get(source, -1) + 1 >= end:
                caught_up.append(source)
        return caught_up

    def apply(self, lookups: Lookups) -> UserBatch:
        """Apply the events ``read`` released, in event-time order, and close what the
        watermark passed. ``lookups`` cover the impressions ``read`` returned."""
        batch, self._batch = self._batch, None
        assert batch is not None, "read() a batch first"
        for partition, released in self._due.items():
            core = self.cores[partition]
            for _, _, event in released:
                self._apply(partition, event, core, lookups, batch)
            mark = self.marks[partition]
            watermark = mark.value()
            self._emit(batch, partition, core.advance(watermark), watermark)
            batch.watermarks[partition] = core.watermark
            saved = self.join_table.get(f"{partition}/mark") or {}
            windows, next_window = closed_windows(
                saved.get("next_window"),
                self._first_ts.get(partition),
                watermark,
                self.rules.click_window,
            )
            if windows:
                batch.closed_windows[partition] = windows
            self.buffers[partition].flush()
            # The watermark lives in the join's own table, written after the batch's samples
            # and held events: a changelog keeps a prefix of what was sent to a partition, so
            # whenever a restart sees this watermark it also sees every state behind it.
            self.join_table[f"{partition}/mark"] = {**mark.to_state(), "next_window": next_window}
        self._due = {}
        self._first_ts.clear()
        # Features go out once per user and pair a batch, as of the newest event applied, so
        # the final values do not depend on the order of the topics.
        for key, ts in self._dirty_users.items():
            user = self._users[key]
            batch.users[key.split("/", 1)[1]] = user.features(max(ts, user.sessions.last or ts))
        for key, ts in self._dirty_pairs.items():
            pair = self._pairs[key]
            user_id, anchor_id = key.split("/", 1)[1].split("|", 1)
            batch.user_anchor[(user_id, anchor_id)] = pair.features(pair.newest or ts)
        for user_id, user in self._users.items():
            self.user_table[user_id] = user.to_state()
        for pair_key, pair in self._pairs.items():
            self.pair_table[pair_key] = pair.to_state()
        for cache in (self._users, self._pairs, self._dirty_users, self._dirty_pairs):
            cache.clear()
        return batch

    def held_events(self) -> int:
        """Events read but waiting for a slower source of their partition."""
        return sum(len(buffer) for buffer in self.buffers.values())

    def _in_order(self, message: Message, mark: PartitionWatermark, batch: UserBatch) -> bool:
        """Apply each message once, in offset order, whatever the consumer delivers.

        The tables record the last offset applied per topic-partition (in the watermark
        state). An older message is read again after a restart (each table drops what it
        already holds); a newer one past a gap means the consumer skipped messages (offsets
        committed past events whose effects were lost in a crash, or at a rebalance). With
        nothing applied yet the gap is counted from offset 0: the first messages of a
        partition handed over before its first batch was durable were lost that way. The batch
        stops reading that topic-partition and asks to read it again from the gap. Messages
        past the gap can still come after the seek (fetched before it): they are refused and
        the rewind asked again. A gap still there after ``REWIND_ATTEMPTS`` batches is a real
        hole in the log.
        """
        if message.topic not in USER_SOURCES:
            return True
        tp = (message.topic, message.partition)
        if tp in batch.rewind:
            return False
        applied = mark.offsets.get(message.topic)
        if applied is not None and message.offset <= applied:
            return True
        # Nothing applied yet: the log starts at offset 0 (a log whose start was deleted by
        # retention is taken for a hole after the rewinds below).
        expected = 0 if applied is None else applied + 1
        if message.offset == expected:
            self._rewound.pop(tp, None)
            return True
        gap, asked = self._rewound.get(tp, (expected, 0))
        asked = asked if gap == expected else 0
        if asked >= REWIND_ATTEMPTS:
            self._rewound.pop(tp, None)
            self.counters.bump(self.counters.events_in, "holes")
            log.warning(
                "%s[%d]: offsets %d..%d are not in the log; going on from %d",
                *tp, expected, message.offset - 1, message.offset,
            )  # fmt: skip
            return True
        self._rewound[tp] = (expected, asked + 1)
        batch.rewind[tp] = expected
        self.counters.bump(self.counters.events_in, "rewinds")
        return False

    def commit(self) -> None:
        """The batch's outputs are durable: apply its state changes to the tables."""
        for overlay in (self.join_table, self.user_table, self.pair_table):
            overlay.commit()

    def _control(self, message: Message, mark: PartitionWatermark) -> None:
        try:
            tick = json.loads(message.value or b"")
            if tick.get("type") != "tick":
                return
            ts = float(tick["ts"])
            ends = {str(k): int(v) for k, v in tick.get("end_offsets", {}).items()}
            if not math.isfinite(ts):
                raise ValueError("tick ts is not finite")
        except (ValueError, TypeError, KeyError, AttributeError):
            return  # a control message of another kind or version: not ours to judge
        mark.tick(ts, ends)

    def _read_event(self, message: Message, mark: PartitionWatermark, batch: UserBatch) -> None:
        topic = message.topic
        self.counters.bump(self.counters.events_in, topic)
        event = read_event(
            message, self.max_event_bytes, self.topic_of, self.counters, batch.dead_letters
        )
        if event is None:
            mark.read_through(topic, message.offset)
            return
        assert not isinstance(event, AnchorStatus)
        assert message.value is not None  # read_event rejects an empty message
        mark.observe(topic, message.offset, event.ts)
        partition = message.partition
        first = self._first_ts.get(partition)
        if first is None or event.ts < first:
            self._first_ts[partition] = event.ts
        self.buffers[partition].add(topic, message.offset, event, message.value)

    def _apply(
        self,
        partition: int,
        event: Event,
        core: JoinCore,
        lookups: Lookups,
        batch: UserBatch,
    ) -> None:
        assert not isinstance(event, AnchorStatus)
        user = self._user(partition, event.user_id)
        # The snapshot is taken before the impression itself counts in the user's features.
        features = (
            self._snapshot(partition, event, user, lookups)
            if isinstance(event, Impression)
            else None
        )
        # Features and the join each drop duplicates on their own: after a crash one table
        # may hold an event's effect while the other does not, and each must catch up alone.
        if user.seen.check_and_add(event.event_id):
            self.counters.duplicates += 1
        else:
            self._features(partition, event, user, core, batch)
        out = core.process(event, features)
        self._emit(batch, partition, out, event.ts)

    def _user(self, partition: int, user_id: str) -> UserState:
        key = f"{partition}/{user_id}"  # every table key starts with its partition
        user = self._users.get(key)
        if user is None:
            user = self._users[key] = UserState.from_state(self.user_table.get(key))
        return user

    def _pair(self, partition: int, user_id: str, anchor_id: str) -> UserAnchorState:
        key = f"{partition}/{user_id}|{anchor_id}"
        pair = self._pairs.get(key)
        if pair is None:
            pair = self._pairs[key] = UserAnchorState.from_state(self.pair_table.get(key))
        return pair

    def _features(
        self, partition: int, event: Event, user: UserState, core: JoinCore, batch: UserBatch
    ) -> None:
        assert isinstance(event, Impression | Click | Watch | Action)
        ts, anchor_id = event.ts, event.anchor_id
        activity: str | None = None
        pair: UserAnchorState | None = None
        if isinstance(event, Impression):
            user.impression(ts)
            activity = "impression"
        elif isinstance(event, Click):
            user.click(ts, anchor_id)
            pair = self._pair(partition, event.user_id, anchor_id)
            pair.click(ts)
            activity = "click"
        elif isinstance(event, Watch):
            user.watch(ts, event.seconds)
            pair = self._pair(partition, event.user_id, anchor_id)
            pair.watch(ts, event.seconds)
            if not core.watched(event.request_id, anchor_id):
                activity = "enter"  # the first heartbeat of this visit
        else:
            pair = self._pair(partition, event.user_id, anchor_id)
            if event.action == "follow":
                pair.follow(ts)
            elif event.action == "gift":
                activity = "gift"
        if activity is not None:
            batch.activity.append(
                {"anchor_id": anchor_id, "ts": ts, "kind": activity, "id": event.event_id}
            )
        self._touch(self._dirty_users, f"{partition}/{event.user_id}", ts)
        if pair is not None:
            self._touch(self._dirty_pairs, f"{partition}/{event.user_id}|{anchor_id}", ts)

    @staticmethod
    def _touch(dirty: dict[str, float], key: str, ts: float) -> None:
        dirty[key] = max(ts, dirty.get(key, ts))

    def _snapshot(
        self, partition: int, event: Impression, user: UserState, lookups: Lookups
    ) -> dict[str, Any]:
        """The impression's features: the scorer's request-time snapshot when there is one,
        else the stream's own state right now (before this impression is counted)."""
        served = lookups.snapshots.get(event.request_id, {}).get(event.anchor_id)
        if served is not None:
            features = dict(served)
        else:
            features = candidate_features(
                user.features(event.ts),
                lookups.anchors.get(event.anchor_id, {}),
                self._pair(partition, event.user_id, event.anchor_id).features(event.ts),
                lookups.user_profiles.get(event.user_id, {}),
                lookups.anchor_profiles.get(event.anchor_id, {}),
            )
        return with_context(features, event.scene, event.position)

    def _emit(self, batch: UserBatch, partition: int, samples: list[Sample], ts: float) -> None:
        if not samples:
            return
        batch.samples.setdefault(partition, []).extend(samples)
        for sample in samples:
            # Conversion turns 1 once, in a version that is not final (finals repeat it).
            if sample.conversion and not sample.final:
                user = self._user(partition, sample.user_id)
                # When a window closes on the watermark (``ts``), the conversion happened at
                # the user's newest event at the latest, not at the watermark.
                newest = user.sessions.last if user.sessions.last is not None else sample.ts
                at = min(ts, newest) if math.isfinite(ts) else newest
                user.conversion(at)
                self._touch(self._dirty_users, f"{partition}/{sample.user_id}", max(at, newest))
                batch.activity.append(
                    {
                        "anchor_id": sample.anchor_id,
                        "ts": at,
                        "kind": "conversion",
                        "id": f"{sample.sample_id}#conv",
                    }
                )

    def open_samples(self) -> int:
        return sum(core.open_count() for core in self.cores.values())


def tick_value(ts: float, end_offsets: Mapping[str, int]) -> bytes:
    """A control message's value: the watermark of its partition may move to ``ts`` once
    every user topic was read to ``end_offsets`` (topic name without prefix -> offset)."""
    return json.dumps({"type": "tick", "ts": ts, "end_offsets": dict(end_offsets)}).encode()


def tick_message(partition: int, ts: float, end_offsets: Mapping[str, int]) -> Message:
    """A tick (``tick_value``) as the control topic's message for ``partition``."""
    return Message("control", partition, 0, None, tick_value(ts, end_offsets))


def land_batch(
    lander: SampleLander,
    batch: UserBatch,
    every: float,
    offsets: Mapping[int, Sequence[int]] | None = None,
) -> list[str]:
    """A batch's samples into ``lander`` (``offsets``: each one's place in the lander's log),
    then each partition's landing step (``SampleLander.land``: the window files due, the
    markers); returns the window folders completed."""
    done = []
    for partition in sorted(set(batch.samples) | set(batch.watermarks)):
        if partition in batch.samples:
            logged = offsets[partition] if offsets is not None else None
            lander.add(partition, batch.samples[partition], logged)
        watermark = batch.watermarks.get(partition, -math.inf)
        windows = batch.closed_windows.get(partition, [])
        done += lander.land(partition, watermark, windows, every)
    return done


def sample_document(sample: Sample) -> bytes:
    """A sample as the JSON value on ``<prefix>.samples`` (the §5 columns)."""
    document = {
        "sample_id": sample.sample_id,
        "version": sample.version,
        "final": sample.final,
        "ts": sample.ts,
        "request_id": sample.request_id,
        "user_id": sample.user_id,
        "anchor_id": sample.anchor_id,
        "click": sample.click,
        "conversion": sample.conversion,
        "watch_seconds": sample.watch_seconds,
        **(sample.features or {}),
    }
    return encode_document(document)


class AnchorSide:
    """Anchor features from anchor-status events and the activity the user side sends."""

    def __init__(
        self,
        table: MutableMapping[str, Any],
        topic_of: Callable[[str], str],
        max_event_bytes: int = 65536,
    ) -> None:
        self.table = Overlay(table)
        self.topic_of = topic_of
        self.max_event_bytes = max_event_bytes
        self.counters = StreamCounters()

    def process(
        self, messages: Sequence[Message]
    ) -> tuple[dict[str, dict[str, float | str]], list[dict[str, Any]]]:
        """Returns (anchor features to write, dead letters)."""
        states: dict[str, AnchorState] = {}
        touched: set[str] = set()
        dead: list[dict[str, Any]] = []
        for message in messages:
            self.counters.bump(self.counters.events_in, message.topic)
            if message.topic == "anchor-status":
                parsed = read_event(
                    message, self.max_event_bytes, self.topic_of, self.counters, dead
                )
                if parsed is None:
                    continue
                assert isinstance(parsed, AnchorStatus)
                state = self._state(states, message.partition, parsed.anchor_id)
                if state.seen.check_and_add(parsed.event_id):
                    self.counters.duplicates += 1
                    continue
                state.status_update(parsed.ts, parsed.live, parsed.status, parsed.viewers)
                touched.add(f"{message.partition}/{parsed.anchor_id}")
            else:
                try:
                    record = json.loads(message.value or b"")
                    anchor_id, ts, kind, record_id = (
                        record["anchor_id"],
                        float(record["ts"]),
                        record["kind"],
                        record["id"],
                    )
                except (ValueError, KeyError, TypeError) as exc:
                    reject(
                        message,
                        f"bad anchor activity record: {exc}",
                        self.topic_of,
                        self.counters,
                        dead,
                    )
                    continue
                state = self._state(states, message.partition, anchor_id)
                if state.seen.check_and_add(f"{record_id}:{kind}"):
                    self.counters.duplicates += 1
                    continue
                state.activity(ts, kind)
                touched.add(f"{message.partition}/{anchor_id}")
        # As of each anchor's newest event, so the final values do not depend on read order.
        writes = {}
        for key in touched:
            state = states[key]
            assert state.newest is not None  # every update records its time
            writes[key.split("/", 1)[1]] = state.features(state.newest)
        for key, state in states.items():
            self.table[key] = state.to_state()
        return writes, dead

    def _state(self, states: dict[str, AnchorState], partition: int, anchor_id: str) -> AnchorState:
        key = f"{partition}/{anchor_id}"  # every table key starts with its partition
        state = states.get(key)
        if state is None:
            state = states[key] = AnchorState.from_state(self.table.get(key))
        return state

    def commit(self) -> None:
        self.table.commit()
