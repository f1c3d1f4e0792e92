"""Mappings that let a batch change state only after its outputs are durable.

``Overlay`` collects writes over a base mapping (a faust table); ``commit`` applies them, in the
order they were first made. A worker that dies before ``commit`` leaves the table as it was
before the batch, so the batch is processed again from its committed offsets and its outputs
(idempotent) are written again: nothing is lost. ``PartitionView`` gives one partition's slice
of a table whose keys carry the partition as a prefix.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

_DELETED = object()


class Overlay(MutableMapping[str, Any]):
    def __init__(self, base: MutableMapping[str, Any]) -> None:
        self.base = base
        self.changes: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self.changes:
            value = self.changes[key]
            if value is _DELETED:
                raise KeyError(key)
            return value
        return self.base[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: Any) -> None:
        self.changes[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.changes[key] = _DELETED

    def __contains__(self, key: object) -> bool:
        if key in self.changes:
            return self.changes[key] is not _DELETED
        return key in self.base

    def __iter__(self) -> Iterator[str]:
        for key in self.base:
            if key not in self.changes:
                yield key
        for key, value in self.changes.items():
            if value is not _DELETED:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def commit(self) -> int:
        """Apply the collected writes to the base; return how many keys changed."""
        count = len(self.changes)
        for key, value in self.changes.items():
            if value is _DELETED:
                if key in self.base:
                    del self.base[key]
            else:
                self.base[key] = value
        self.changes.clear()
        return count


class PartitionView(MutableMapping[str, Any]):
    """Keys ``<partition>/<space>/<key>`` of ``base`` seen as ``<key>``."""

    def __init__(self, base: MutableMapping[str, Any], partition: int, space: str) -> None:
        self.base = base
        self.prefix = f"{partition}/{space}/"

    def __getitem__(self, key: str) -> Any:
        return self.base[self.prefix + key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.base.get(self.prefix + key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self.base[self.prefix + key] = value

    def __delitem__(self, key: str) -> None:
        del self.base[self.prefix + key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (self.prefix + key) in self.base

    def __iter__(self) -> Iterator[str]:
        n = len(self.prefix)
        return (key[n:] for key in list(self.base) if key.startswith(self.prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)
