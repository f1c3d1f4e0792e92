"""Feature fetch for a request: Redis in one pipelined round trip, profiles through a cache.

The two are read at the same time. Either store failing (down, timing out) gives the
catalogue defaults for its part and marks the request degraded; it never fails the request.
The candidates' rows are assembled by ``features.request.request_rows``, from the same parts
the stream joiner uses.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from features.profiles import CachedProfiles, Profile
from features.request import RequestRows, request_rows
from features.store import FeatureStore, RequestFeatures

log = logging.getLogger("liverank.scorer")


@dataclass
class Fetched:
    rows: RequestRows
    degraded: list[str]  # which stores failed


class ProfileReader:
    """Profiles for a request without blocking the event loop.

    Cache hits are answered at once. Misses are read from the store on one background thread
    (a happybase connection must not be shared between threads), each id at most once at a
    time: a request missing an id that is already being read waits for that read. A request
    waits at most ``timeout_seconds``; a read still running then fills the cache for the
    requests after it. After a failed read the store is left alone for ``retry_seconds``
    (misses get the defaults meanwhile), so a down HBase costs a request at most the timeout
    and piles no reads up.
    """

    def __init__(
        self,
        profiles: CachedProfiles,
        timeout_seconds: float,
        retry_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profiles = profiles
        self.timeout = timeout_seconds
        self.retry = retry_seconds
        self.clock = clock
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="liverank-profiles")
        self._reading: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._resting_until = float("-inf")

    async def open(self) -> None:
        """Connect to the store ahead of the first request (on the reading thread); a store
        that is down only logs: requests get the defaults until it is back."""
        try:
            await asyncio.wrap_future(self._executor.submit(self.profiles.store.open))
        except Exception as exc:
            log.warning("profile store not reachable at start, serving defaults: %s", exc)

    async def read(
        self, user_id: str, anchor_ids: Sequence[str]
    ) -> tuple[Profile, dict[str, Profile], bool]:
        """(the user's profile, the anchors' profiles, whether every miss was read); a
        profile that could not be read is left out (the request gets its defaults)."""
        users, user_misses = self.profiles.cached("user", [user_id])
        anchors, anchor_misses = self.profiles.cached("anchor", anchor_ids)
        if not user_misses and not anchor_misses:
            return users[user_id], anchors, True
        reads = self._start("user", user_misses) | self._start("anchor", anchor_misses)
        complete = False  # no read started: the store is resting after a failure
        if reads:
            done, running = await asyncio.wait(reads, timeout=self.timeout)
            complete = not running and all(
                not read.cancelled() and read.exception() is None for read in done
            )
        users.update(self.profiles.cached("user", user_misses)[0])
        anchors.update(self.profiles.cached("anchor", anchor_misses)[0])
        return users.get(user_id, {}), anchors, complete

    def _start(self, kind: str, ids: list[str]) -> set[asyncio.Future[Any]]:
        """The reads ``ids`` wait for: those already running, and one new read of the rest."""
        new = [i for i in ids if (kind, i) not in self._reading]
        if new and self.clock() >= self._resting_until:
            read = asyncio.wrap_future(self._executor.submit(self.profiles.fill, kind, new))
            keys = [(kind, i) for i in new]
            for key in keys:
                self._reading[key] = read
            read.add_done_callback(functools.partial(self._finished, keys))
        return {self._reading[(kind, i)] for i in ids if (kind, i) in self._reading}

    def _finished(self, keys: list[tuple[str, str]], read: asyncio.Future[Any]) -> None:
        for key in keys:
            if self._reading.get(key) is read:
                del self._reading[key]
        error = None if read.cancelled() else read.exception()
        if error is not None:
            log.warning("profile read failed, defaults for %.1fs: %s", self.retry, error)
            self._resting_until = self.clock() + self.retry


class FeatureFetcher:
    def __init__(
        self,
        store: FeatureStore,
        profiles: CachedProfiles,
        timeout_seconds: float = 0.5,
        profile_timeout_seconds: float = 0.5,
    ) -> None:
        self.store = store
        self.profiles = ProfileReader(profiles, profile_timeout_seconds)
        self.timeout = timeout_seconds

    async def open(self) -> None:
        await self.profiles.open()

    async def fetch(self, user_id: str, anchor_ids: Sequence[str], scene: str) -> Fetched:
        (found, live), (user_profile, anchor_profiles, complete) = await asyncio.gather(
            self._features(user_id, anchor_ids), self.profiles.read(user_id, anchor_ids)
        )
        degraded = [name for name, ok in (("redis", live), ("hbase", complete)) if not ok]
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

    async def _features(
        self, user_id: str, anchor_ids: Sequence[str]
    ) -> tuple[RequestFeatures, bool]:
        try:
            return await asyncio.wait_for(self.store.read(user_id, anchor_ids), self.timeout), True
        except Exception as exc:  # any store failure → defaults, never an error
            log.warning("redis read failed, scoring with defaults: %s", exc)
            return RequestFeatures({}, [], []), False
