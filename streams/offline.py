"""The stream workers' pipeline run in one process over simulated traffic, no services.

The same ``UserSide`` / ``AnchorSide`` / ``SampleLander`` code the faust workers run, fed in
event-time order in small batches, with in-memory tables and the profiles held in memory.
It lands a sample set on disk exactly laid out as the workers land it; the trainer's tests,
its benchmark and ``liverank simulate --samples`` use it to get samples in seconds without
Kafka. (The real path, Kafka → workers → Parquet, is what the integration tests and the demo
run.)
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from features.catalog import SEQUENCE_SEPARATOR
from features.profiles import ANCHOR_COLUMNS, USER_COLUMNS
from liverank.simulator.traffic import DayTraffic, SimEvent
from liverank.simulator.world import AGE_BANDS, CATEGORIES, GENDERS, TAGS, World
from snapshots.samples import SampleLander
from streams.events import encode_document
from streams.join import LabelRules
from streams.pipeline import (
    USER_SOURCES,
    AnchorSide,
    Lookups,
    Message,
    UserSide,
    land_batch,
    tick_message,
)


def world_profiles(world: World) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """The profile features (``p_*``) of every user and anchor, as the profile store serves."""
    users, anchors = world.users, world.anchors
    user_features = {}
    for i, user_id in enumerate(users.ids):
        row = {
            "age_band": AGE_BANDS[users.age_band[i]],
            "gender": GENDERS[users.gender[i]],
            "categories": SEQUENCE_SEPARATOR.join(CATEGORIES[c] for c in users.picked[i]),
        }
        user_features[str(user_id)] = {USER_COLUMNS[k]: v for k, v in row.items()}
    anchor_features = {}
    for i, anchor_id in enumerate(anchors.ids):
        row = {
            "category": CATEGORIES[anchors.category[i]],
            "tags": SEQUENCE_SEPARATOR.join(TAGS[t] for t in anchors.tags[i]),
        }
        anchor_features[str(anchor_id)] = {ANCHOR_COLUMNS[k]: v for k, v in row.items()}
    return user_features, anchor_features


class OfflineLander:
    """Feeds events through the worker pipeline and lands their samples under ``root``."""

    def __init__(
        self,
        root: str,
        rules: LabelRules,
        partitions: int = 4,
        profiles: tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]] = ({}, {}),
        batch_events: int = 2000,
    ) -> None:
        self.partitions = partitions
        self.rules = rules
        self.batch_events = batch_events
        self.user_profiles, self.anchor_profiles = profiles
        self.user_side = UserSide(
            rules, {"join": {}, "users": {}, "user_anchor": {}}, topic_of=_topic
        )
        self.anchor_side = AnchorSide({}, topic_of=_topic)
        self.lander = SampleLander(root, partitions, rules.click_window, rules.horizon)
        self.anchor_features: dict[str, dict[str, float | str]] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.activity: list[Message] = []
        self.newest = float("-inf")
        self.samples = 0

    def feed(self, events: Iterable[SimEvent]) -> None:
        """Events in event-time order (a simulator day), processed in batches."""
        chunk: list[SimEvent] = []
        for event in events:
            chunk.append(event)
            if len(chunk) >= self.batch_events:
                self._batch(chunk)
                chunk = []
        if chunk:
            self._batch(chunk)

    def finish(self) -> None:
        """Close every window: the watermark moves past the last event plus every horizon."""
        if self.newest == float("-inf"):
            return
        ts = self.newest + self.rules.horizon + 2 * 900.0
        self._user_batch(
            [
                tick_message(p, ts, {t: self.offsets.get((t, p), 0) for t in USER_SOURCES})
                for p in range(self.partitions)
            ]
        )

    def _message(self, topic: str, key: str, document: dict[str, Any]) -> Message:
        partition = zlib.crc32(key.encode()) % self.partitions
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1
        return Message(topic, partition, offset, key.encode(), encode_document(document))

    def _batch(self, chunk: list[SimEvent]) -> None:
        anchor_messages = self.activity
        self.activity = []
        user_messages: list[Message] = []
        for ts, _, topic, key, document in chunk:
            self.newest = max(self.newest, ts)
            message = self._message(topic, key, document)
            (anchor_messages if topic == "anchor-status" else user_messages).append(message)
        writes, _ = self.anchor_side.process(anchor_messages)
        self.anchor_side.commit()
        self.anchor_features.update(writes)
        self._user_batch(user_messages)

    def _user_batch(self, messages: list[Message]) -> None:
        lookups = Lookups(
            snapshots={},
            anchors=self.anchor_features,
            user_profiles=self.user_profiles,
            anchor_profiles=self.anchor_profiles,
        )
        # Events come in event-time order and every one fed so far is in: all of a batch goes.
        out = self.user_side.process(
            messages, lookups, highwater=lambda topic, p: self.offsets.get((topic, p), 0)
        )
        self.samples += sum(len(samples) for samples in out.samples.values())
        land_batch(self.lander, out, every=0.0)
        self.user_side.commit()
        for record in out.activity:
            self.activity.append(self._message("anchor-activity", record["anchor_id"], record))


def _topic(name: str) -> str:
    return f"offline.{name}"


def land_traffic(
    days: Iterable[DayTraffic],
    root: str,
    rules: LabelRules,
    world: World,
    partitions: int = 4,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Land every day's samples under ``root``; return how many sample versions came out."""
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    lander = OfflineLander(root, rules, partitions, profiles=world_profiles(world))
    for traffic in days:
        lander.feed(traffic.events)
        say(f"[land] day {traffic.day + 1}: {lander.samples:,d} sample versions so far")
    lander.finish()
    return lander.samples
