"""Request-time feature snapshots: what the scorer served, keyed by request_id, in HBase.

Table ``<prefix>_snapshots``, family ``f`` with a TTL; row key the request_id; one column
``f:<anchor_id>`` per candidate holding the features as JSON. The joiner reads them so that a
sample carries exactly the features the model saw. ``MemorySnapshotStore`` is the in-memory twin.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from features.hbase import HBaseTables

Snapshot = dict[str, dict[str, Any]]  # anchor_id -> features


class SnapshotStore(Protocol):
    def put(self, request_id: str, snapshot: Mapping[str, Mapping[str, Any]]) -> None: ...

    def get(self, request_ids: Iterable[str]) -> dict[str, Snapshot]: ...


class HBaseSnapshotStore:
    def __init__(self, tables: HBaseTables, ttl_seconds: int) -> None:
        self.tables = tables
        self.families = {"f": {"max_versions": 1, "time_to_live": ttl_seconds}}

    def _table(self) -> Any:
        return self.tables.table("snapshots", self.families)

    def put(self, request_id: str, snapshot: Mapping[str, Mapping[str, Any]]) -> None:
        columns = {
            f"f:{anchor_id}".encode(): json.dumps(values, separators=(",", ":")).encode()
            for anchor_id, values in snapshot.items()
        }
        self._table().put(request_id.encode(), columns)

    def get(self, request_ids: Iterable[str]) -> dict[str, Snapshot]:
        keys = [r.encode() for r in dict.fromkeys(request_ids)]
        if not keys:
            return {}
        return {
            key.decode(): {c.decode()[2:]: json.loads(v) for c, v in cols.items()}
            for key, cols in self._table().rows(keys)
        }


class MemorySnapshotStore:
    def __init__(self) -> None:
        self.rows: dict[str, Snapshot] = {}

    def put(self, request_id: str, snapshot: Mapping[str, Mapping[str, Any]]) -> None:
        self.rows.setdefault(request_id, {}).update({a: dict(v) for a, v in snapshot.items()})

    def get(self, request_ids: Iterable[str]) -> dict[str, Snapshot]:
        return {r: self.rows[r] for r in request_ids if r in self.rows}
