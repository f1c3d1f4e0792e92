"""Offline profiles (daily batch) in HBase: load from Parquet, read by id with a TTL cache.

Tables ``<prefix>_user_profile`` and ``<prefix>_anchor_profile``, family ``p``; row key the id;
list values (categories, tags) are comma-joined. ``MemoryProfileStore`` is the in-memory twin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from features.catalog import SEQUENCE_SEPARATOR
from features.hbase import HBaseTables

Profile = dict[str, str]
FAMILY = {"p": {"max_versions": 1}}
USER_TABLE, ANCHOR_TABLE = "user_profile", "anchor_profile"
# Parquet column -> catalogue feature
USER_COLUMNS = {"age_band": "p_age_band", "gender": "p_gender", "categories": "p_user_categories"}
ANCHOR_COLUMNS = {"category": "p_anchor_category", "tags": "p_anchor_tags"}


class ProfileStore(Protocol):
    def open(self) -> None:
        """Connect and make sure the tables exist (so the first read is a read)."""

    def put(self, kind: str, rows: Mapping[str, Profile]) -> None: ...

    def get(self, kind: str, ids: Iterable[str]) -> dict[str, Profile]: ...


class HBaseProfileStore:
    def __init__(self, tables: HBaseTables) -> None:
        self.tables = tables

    def _table(self, kind: str) -> Any:
        return self.tables.table(USER_TABLE if kind == "user" else ANCHOR_TABLE, FAMILY)

    def open(self) -> None:
        with self.tables.dropping_on_error():
            self._table("user")
            self._table("anchor")

    def put(self, kind: str, rows: Mapping[str, Profile]) -> None:
        with self.tables.dropping_on_error(), self._table(kind).batch(batch_size=1000) as batch:
            for row_id, profile in rows.items():
                batch.put(
                    row_id.encode(), {f"p:{k}".encode(): v.encode() for k, v in profile.items()}
                )

    def get(self, kind: str, ids: Iterable[str]) -> dict[str, Profile]:
        keys = [i.encode() for i in dict.fromkeys(ids)]
        if not keys:
            return {}
        rows = self.tables.read(lambda: self._table(kind).rows(keys))
        return {
            k.decode(): {c.decode()[2:]: v.decode() for c, v in cols.items()} for k, cols in rows
        }


class MemoryProfileStore:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Profile]] = {"user": {}, "anchor": {}}

    def open(self) -> None:
        pass

    def put(self, kind: str, rows: Mapping[str, Profile]) -> None:
        self.rows[kind].update({k: dict(v) for k, v in rows.items()})

    def get(self, kind: str, ids: Iterable[str]) -> dict[str, Profile]:
        return {i: dict(self.rows[kind][i]) for i in ids if i in self.rows[kind]}


class CachedProfiles:
    """Profile features by id through a TTL cache (a miss is cached too). The cache keeps the
    feature form (``p_*`` names), so a hit costs one look-up; the dicts handed out are the
    cache's own, to be read only. Entries past their TTL are dropped as later reads fill the
    cache, so a long-lived worker or scorer holds the ids of the last TTL only, not of every
    user it ever served."""

    def __init__(
        self, store: ProfileStore, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.ttl = ttl_seconds
        self.clock = clock
        self._cache: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}

    def features(self, kind: str, ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """The profile features of ``ids`` (``kind`` "user" or "anchor"), empty ones for ids
        without a profile."""
        found, misses = self.cached(kind, ids)
        if misses:
            found.update(self.fill(kind, misses))
        return found

    def cached(self, kind: str, ids: Iterable[str]) -> tuple[dict[str, dict[str, str]], list[str]]:
        """What the cache holds of ``ids``, and the ids it does not (or only expired), each
        once. No store read."""
        now = self.clock()
        found: dict[str, dict[str, str]] = {}
        misses = []
        for i in ids:
            hit = self._cache.get((kind, i))
            if hit is not None and self._fresh(hit[0], now):
                found[i] = hit[1]
            else:
                misses.append(i)
        return found, list(dict.fromkeys(misses))

    def fill(self, kind: str, ids: list[str]) -> dict[str, dict[str, str]]:
        """Read ``ids`` from the store into the cache (an id without a profile is cached
        empty) and return their features; a store failure raises and caches nothing."""
        now = self.clock()
        fetched = self.store.get(kind, ids)
        columns = USER_COLUMNS if kind == "user" else ANCHOR_COLUMNS
        found = {}
        for i in ids:
            features = _features(fetched.get(i, {}), columns)
            self._cache.pop((kind, i), None)  # re-added at the end: oldest fills stay first
            self._cache[(kind, i)] = (now, features)
            found[i] = features
        self._forget_expired(now)
        return found

    def __len__(self) -> int:
        """Entries held (expired ones not yet dropped included)."""
        return len(self._cache)

    def _fresh(self, filled_at: float, now: float) -> bool:
        return now - filled_at < self.ttl

    def _forget_expired(self, now: float) -> None:
        """Drop the expired entries at the front of the cache, oldest fill first."""
        cache = self._cache
        while cache:
            oldest = next(iter(cache))
            if self._fresh(cache[oldest][0], now):
                return
            del cache[oldest]


def _features(profile: Profile, columns: Mapping[str, str]) -> dict[str, str]:
    return {feature: profile.get(column, "") for column, feature in columns.items()}


def _rows_from_parquet(
    path: Path, id_column: str, columns: Mapping[str, str]
) -> Iterator[dict[str, Profile]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    missing = {id_column, *columns} - set(parquet.schema_arrow.names)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    for batch in parquet.iter_batches(batch_size=5000, columns=[id_column, *columns]):
        rows: dict[str, Profile] = {}
        for record in batch.to_pylist():
            profile = {}
            for column in columns:
                value = record[column]
                if isinstance(value, list):
                    value = SEQUENCE_SEPARATOR.join(str(v) for v in value)
                profile[column] = "" if value is None else str(value)
            rows[str(record[id_column])] = profile
        yield rows


def load_profiles(
    store: ProfileStore, folder: Path, progress: Callable[[str], None] = print
) -> dict[str, int]:
    """Load ``users.parquet`` and ``anchors.parquet`` from ``folder`` in batches."""
    counts = {}
    for kind, name, id_column, columns in (
        ("user", "users.parquet", "user_id", USER_COLUMNS),
        ("anchor", "anchors.parquet", "anchor_id", ANCHOR_COLUMNS),
    ):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found (expected users.parquet and anchors.parquet)"
            )
        total = 0
        for rows in _rows_from_parquet(path, id_column, columns):
            store.put(kind, rows)
            total += len(rows)
            progress(f"{kind} profiles: {total:,d} loaded")
        counts[kind] = total
    return counts
