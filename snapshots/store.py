"""Request-time feature snapshots: what the scorer served, keyed by request_id, in HBase.

Table ``<prefix>_snapshots``, family ``f`` with a TTL; row key the request_id; one cell
``f:s`` holding the whole request as JSON, ``{"names": [feature, ...], "rows": {anchor_id:
[value, ...]}}`` (each name written once, not once per candidate: a request has 200). The
joiner reads them so that a sample carries exactly the features the model saw. A ``None``
value is not kept (the reader leaves that feature out). ``MemorySnapshotStore`` is the
in-memory twin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import orjson

from features.hbase import HBaseTables
from features.request import RequestRows

Snapshot = dict[str, dict[str, Any]]  # anchor_id -> features
Snapshots = Mapping[str, Mapping[str, Any]] | RequestRows  # what ``put`` takes
CELL = b"f:s"


class SnapshotStore(Protocol):
    def put(self, request_id: str, snapshot: Snapshots) -> None: ...

    def put_many(self, snapshots: Iterable[tuple[str, Snapshots]]) -> None:
        """Several requests' snapshots in one round trip."""
        ...

    def get(self, request_ids: Iterable[str]) -> dict[str, Snapshot]: ...


def encode_snapshot(snapshot: Snapshots) -> bytes:
    """One request's snapshot as the JSON cell (see the module docstring). A request's
    ``RequestRows`` are laid out from their two parts: the shared values, then each
    candidate's own (a name in both parts is read back with the candidate's value, as
    ``RequestRows.row`` has it).

    >>> cell = encode_snapshot({"a1": {"a_viewers": 3.0, "c_scene": "home"}, "a2": {}})
    >>> decode_snapshot(cell)
    {'a1': {'a_viewers': 3.0, 'c_scene': 'home'}, 'a2': {}}
    """
    if isinstance(snapshot, RequestRows):
        head = list(snapshot.shared.values())
        columns = snapshot.own.values()
        owns = zip(*columns, strict=True) if columns else [()] * len(snapshot)
        rows = {a: head + list(own) for a, own in zip(snapshot.anchor_ids, owns, strict=True)}
        return orjson.dumps({"names": [*snapshot.shared, *snapshot.own], "rows": rows})
    names = list(dict.fromkeys(name for values in snapshot.values() for name in values))
    rows = {a: [values.get(n) for n in names] for a, values in snapshot.items()}
    return orjson.dumps({"names": names, "rows": rows})


def decode_snapshot(cell: bytes) -> Snapshot:
    document = orjson.loads(cell)
    names = document["names"]
    return {
        anchor_id: {n: v for n, v in zip(names, row, strict=True) if v is not None}
        for anchor_id, row in document["rows"].items()
    }


class HBaseSnapshotStore:
    def __init__(self, tables: HBaseTables, ttl_seconds: int) -> None:
        self.tables = tables
        self.families = {"f": {"max_versions": 1, "time_to_live": ttl_seconds}}

    def _table(self) -> Any:
        return self.tables.table("snapshots", self.families)

    def put(self, request_id: str, snapshot: Snapshots) -> None:
        self.put_many([(request_id, snapshot)])

    def put_many(self, snapshots: Iterable[tuple[str, Snapshots]]) -> None:
        with self.tables.dropping_on_error(), self._table().batch() as batch:
            for request_id, snapshot in snapshots:
                batch.put(request_id.encode(), {CELL: encode_snapshot(snapshot)})

    def get(self, request_ids: Iterable[str]) -> dict[str, Snapshot]:
        keys = [r.encode() for r in dict.fromkeys(request_ids)]
        if not keys:
            return {}
        rows = self.tables.read(lambda: self._table().rows(keys, columns=[CELL]))
        return {key.decode(): decode_snapshot(cells[CELL]) for key, cells in rows if CELL in cells}


class MemorySnapshotStore:
    def __init__(self) -> None:
        self.rows: dict[str, Snapshot] = {}

    def put(self, request_id: str, snapshot: Snapshots) -> None:
        # As in HBase, a request's snapshot is one value: a second put replaces it.
        self.rows[request_id] = decode_snapshot(encode_snapshot(snapshot))

    def put_many(self, snapshots: Iterable[tuple[str, Snapshots]]) -> None:
        for request_id, snapshot in snapshots:
            self.put(request_id, snapshot)

    def get(self, request_ids: Iterable[str]) -> dict[str, Snapshot]:
        return {r: self.rows[r] for r in request_ids if r in self.rows}
