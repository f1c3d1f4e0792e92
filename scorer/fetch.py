"""Feature fetch for a request: Redis in one pipelined round trip, profiles through a cache.

Either store failing (down, timing out) gives the catalogue defaults for its part and marks
the request degraded; it never fails the request. The candidates' rows are assembled by
``features.request.request_rows``, from the same parts the stream joiner uses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from features.profiles import CachedProfiles, Profile
from features.request import RequestRows, request_rows
from features.store import FeatureStore, RequestFeatures

log = logging.getLogger("liverank.scorer")


@dataclass
class Fetched:
    rows: RequestRows
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
        except Exception as exc:  # any store failure → defaults, never an error
            log.warning("redis read failed, scoring with defaults: %s", exc)
            degraded.append("redis")
            found = RequestFeatures({}, [], [])
        user_profile: Profile
        anchor_profiles: dict[str, Profile]
        try:
            user_profile = self.profiles.user_features(user_id)
            anchor_profiles = self.profiles.anchor_features(anchor_ids)
        except Exception as exc:
            log.warning("profile read failed, scoring with defaults: %s", exc)
            degraded.append("hbase")
            user_profile, anchor_profiles = {}, {}
        rows = request_rows(
            user_id,
            anchor_ids,
            found.user,
            found.anchors,
            found.user_anchor,
            user_profile,
            anchor_profiles,
            scene,
        )
        return Fetched(rows, degraded)
