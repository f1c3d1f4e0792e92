"""Feature fetch for a request: Redis in one pipelined round trip, profiles through a cache.

Either store failing (down, timing out) gives the catalogue defaults for its part and marks
the request degraded; it never fails the request. The candidates' rows are assembled by
``features.request.candidate_features``, the same function the stream joiner uses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from features.catalog import defaults
from features.profiles import CachedProfiles
from features.request import candidate_features, with_context
from features.store import FeatureStore

log = logging.getLogger("liverank.scorer")


@dataclass
class Fetched:
    rows: list[dict[str, Any]]
    degraded: list[str]  # which stores failed


class FeatureFetcher:
    def __init__(
        self, store: FeatureStore, profiles: CachedProfiles, timeout_seconds: float = 0.5
    ) -> None:
        self.store = store
        self.profiles = profiles
        self.timeout = timeout_seconds

    async def fetch(self, user_id: str, anchor_ids: Sequence[str], scene: str) -> Fetched:
        degraded = []
        try:
            found = await asyncio.wait_for(self.store.read(user_id, anchor_ids), self.timeout)
            user, anchors, pairs = found.user, found.anchors, found.user_anchor
        except Exception as exc:  # any store failure → defaults, never an error
            log.warning("redis read failed, scoring with defaults: %s", exc)
            degraded.append("redis")
            user, anchors, pairs = dict(defaults("user")), {}, {}
        try:
            user_profile = self.profiles.user_features(user_id)
            anchor_profiles = self.profiles.anchor_features(anchor_ids)
        except Exception as exc:
            log.warning("profile read failed, scoring with defaults: %s", exc)
            degraded.append("hbase")
            user_profile, anchor_profiles = {}, {}
        rows = [
            with_context(
                candidate_features(
                    user,
                    anchors.get(anchor_id, {}),
                    pairs.get(anchor_id, {}),
                    user_profile,
                    anchor_profiles.get(anchor_id, {}),
                ),
                scene,
                0,  # the slot is not known before ranking; samples carry the real one
            )
            for anchor_id in anchor_ids
        ]
        return Fetched(rows, degraded)
