"""The dynamic vocabulary: raw value → embedding row, per vocabulary, growing online.

All vocabularies share one row space (one embedding table): row 0 is padding (always zero),
each vocabulary has its own default row for values it does not know, and admitted values get
a row of their own (from the free list, else a new one). No hashing, so no silent collisions.
Per value it keeps how often it was seen (the ``freq`` of dynamic L1) and when (event time),
and for values not admitted yet their running count (hard and Poisson admission carry it
across windows and days). ``evict`` frees the rows of values unseen for the TTL.

>>> vocab = Vocabulary()
>>> rule = AdmissionRule(mode="hard", full_threshold=3, incremental_threshold=2)
>>> vocab.observe("user_id", {"u1": 2, "u2": 1}, ts=100.0, rule=rule, phase="incremental")
[2]
>>> vocab.lookup("user_id", ["u1", "u2", "u9"]).tolist()  # u2 not admitted: default row 1
[2, 1, 1]
>>> vocab.pending["user_id"]
{'u2': 1}
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from trainer.admission import AdmissionRule, Phase

PADDING_ROW = 0


@dataclass
class VocabEntries:
    default_row: int
    rows: dict[str, int] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)


class Vocabulary:
    """Every vocabulary of one model, over one shared row space."""

    def __init__(self) -> None:
        self.vocabs: dict[str, VocabEntries] = {}
        self.pending: dict[str, dict[str, int]] = {}
        self.pending_seen: dict[str, dict[str, float]] = {}
        self.size = PADDING_ROW + 1  # rows in use or freed: the table holds at least this many
        self._free: list[int] = []

    # -- rows --------------------------------------------------------------------------------

    def _allocate(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        row = self.size
        self.size += 1
        return row

    def entries(self, vocab: str) -> VocabEntries:
        found = self.vocabs.get(vocab)
        if found is None:
            found = self.vocabs[vocab] = VocabEntries(default_row=self._allocate())
            self.pending[vocab] = {}
            self.pending_seen[vocab] = {}
        return found

    def __len__(self) -> int:
        """Admitted values over every vocabulary (default rows not counted)."""
        return sum(len(v.rows) for v in self.vocabs.values())

    # -- admission ---------------------------------------------------------------------------

    def observe(
        self,
        vocab: str,
        counts: Mapping[str, int],
        ts: float,
        rule: AdmissionRule,
        phase: Phase,
    ) -> list[int]:
        """Count one window's occurrences; admit by ``rule``; return the new rows (sorted).

        Values are taken in sorted order, so the rows given out do not depend on the order
        the counts came in.
        """
        entries = self.entries(vocab)
        pending, seen = self.pending[vocab], self.pending_seen[vocab]
        new_rows = []
        for value in sorted(counts):
            occurrences = counts[value]
            row = entries.rows.get(value)
            if row is not None:
                entries.count[value] += occurrences
                entries.last_seen[value] = max(ts, entries.last_seen[value])
                continue
            admitted, total = rule.admit(vocab, value, occurrences, pending.get(value, 0), phase)
            if admitted:
                row = self._allocate()
                entries.rows[value] = row
                entries.count[value] = total
                entries.last_seen[value] = max(ts, seen.pop(value, ts))
                pending.pop(value, None)
                new_rows.append(row)
            else:
                pending[value] = total
                seen[value] = max(ts, seen.get(value, ts))
        return sorted(new_rows)

    def lookup(self, vocab: str, values: Iterable[str]) -> np.ndarray:
        """Rows of ``values``; an unknown value gets the vocabulary's default row."""
        entries = self.entries(vocab)
        rows, default = entries.rows, entries.default_row
        return np.fromiter((rows.get(v, default) for v in values), dtype=np.int64)

    def frequencies(self, rows_out: np.ndarray) -> None:
        """Write each admitted row's count into ``rows_out[row]`` (the dynamic-L1 ``freq``)."""
        for entries in self.vocabs.values():
            if entries.rows:
                index = np.fromiter(entries.rows.values(), dtype=np.int64)
                values = np.fromiter(
                    (entries.count[v] for v in entries.rows), dtype=np.float64, count=len(index)
                )
                rows_out[index] = values

    # -- daily restart -----------------------------------------------------------------------

    def evict(self, now: float, ttl_seconds: float) -> list[int]:
        """Forget values unseen since ``now - ttl_seconds``; return their freed rows."""
        freed = []
        horizon = now - ttl_seconds
        for name, entries in self.vocabs.items():
            for value in [v for v, t in entries.last_seen.items() if t < horizon]:
                freed.append(entries.rows.pop(value))
                del entries.count[value], entries.last_seen[value]
            seen = self.pending_seen[name]
            for value in [v for v, t in seen.items() if t < horizon]:
                del seen[value], self.pending[name][value]
        for row in freed:
            heapq.heappush(self._free, row)
        return sorted(freed)

    def admit_from(self, other: Vocabulary) -> list[tuple[str, str, int, int]]:
        """Admit the values ``other`` has and this one lacks (the vocabulary sync of a warm
        restart). Returns (vocab, value, row here, row there) for copying their weights."""
        added = []
        for name, theirs in sorted(other.vocabs.items()):
            entries = self.entries(name)
            for value in sorted(theirs.rows):
                if value in entries.rows:
                    entries.last_seen[value] = max(
                        entries.last_seen[value], theirs.last_seen[value]
                    )
                    continue
                row = self._allocate()
                entries.rows[value] = row
                entries.count[value] = max(theirs.count[value], self.pending[name].pop(value, 0))
                entries.last_seen[value] = theirs.last_seen[value]
                self.pending_seen[name].pop(value, None)
                added.append((name, value, row, theirs.rows[value]))
            for value, count in other.pending.get(name, {}).items():
                if value not in entries.rows and count > self.pending[name].get(value, 0):
                    self.pending[name][value] = count
                    self.pending_seen[name][value] = other.pending_seen[name][value]
        return added

    # -- files -------------------------------------------------------------------------------

    def to_table(self, dropped: set[int] | None = None) -> pa.Table:
        """``vocab.parquet``: kind (default | id | pending), vocab, value, row, count, last_seen.

        Rows in ``dropped`` (weights driven to zero) are left out: they score as the default.
        """
        dropped = dropped or set()
        kinds, names, values, rows, counts, seen = [], [], [], [], [], []

        def put(kind: str, name: str, value: str, row: int, count: int, ts: float) -> None:
            kinds.append(kind)
            names.append(name)
            values.append(value)
            rows.append(row)
            counts.append(count)
            seen.append(ts)

        for name in sorted(self.vocabs):
            entries = self.vocabs[name]
            put("default", name, "", entries.default_row, 0, 0.0)
            for value in sorted(entries.rows):
                row = entries.rows[value]
                if row not in dropped:
                    put("id", name, value, row, entries.count[value], entries.last_seen[value])
            for value in sorted(self.pending[name]):
                put(
                    "pending",
                    name,
                    value,
                    -1,
                    self.pending[name][value],
                    self.pending_seen[name][value],
                )
        return pa.table(
            {
                "kind": pa.array(kinds, pa.string()),
                "vocab": pa.array(names, pa.string()),
                "value": pa.array(values, pa.string()),
                "row": pa.array(rows, pa.int64()),
                "count": pa.array(counts, pa.int64()),
                "last_seen": pa.array(seen, pa.float64()),
            }
        )

    @classmethod
    def from_table(cls, table: pa.Table, size: int) -> Vocabulary:
        """Inverse of ``to_table``; ``size`` is the embedding table's row count."""
        vocab = cls()
        columns = {name: table[name].to_pylist() for name in table.column_names}
        used = {PADDING_ROW}
        for kind, name, value, row, count, ts in zip(
            columns["kind"],
            columns["vocab"],
            columns["value"],
            columns["row"],
            columns["count"],
            columns["last_seen"],
            strict=True,
        ):
            if kind == "default":
                vocab.vocabs[name] = VocabEntries(default_row=row)
                vocab.pending[name], vocab.pending_seen[name] = {}, {}
                used.add(row)
            elif kind == "id":
                entries = vocab.vocabs[name]
                entries.rows[value], entries.count[value] = row, count
                entries.last_seen[value] = ts
                used.add(row)
            elif kind == "pending":
                vocab.pending[name][value] = count
                vocab.pending_seen[name][value] = ts
            else:
                raise ValueError(f"vocab.parquet: unknown kind {kind!r}")
        vocab.size = max(size, max(used) + 1)
        vocab._free = sorted(set(range(1, vocab.size)) - used)
        return vocab
