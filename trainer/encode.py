"""Sample columns → the model's inputs (rows of the embedding table, dense values, labels).

One encoder for the trainer and the scorer: the trainer reads sample tables, the scorer a
request's rows (``RequestColumns``), and both go through the same ``encode``. Columns are
mapped through their dictionary (each distinct value looked up once), so a batch costs a few
numpy gathers.

>>> from liverank.settings import TrainerSettings
>>> from trainer.fields import field_specs
>>> encoder = Encoder(field_specs(TrainerSettings()), Vocabulary())
>>> batch = encoder.encode(pa.table({"anchor_id": ["a1", None], "a_viewers": [12.0, None]}))
>>> len(batch), tuple(batch.dense.shape), tuple(batch.sequences[0].shape)
(2, (2, 32), (2, 50))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from features.catalog import CATALOG_BY_NAME, SEQUENCE_SEPARATOR
from features.request import RequestRows
from trainer.admission import AdmissionRule, Phase
from trainer.fields import FieldSpec
from trainer.vocab import PADDING_ROW, Vocabulary


@dataclass
class Batch:
    single: torch.Tensor  # [B, F] rows of the id and numeric fields
    # Per sequence field [B, L] rows, PADDING_ROW past the end; or [1, L] when every row has
    # the same list (a request's user fields), which the model reads once for all rows.
    sequences: list[torch.Tensor]
    dense: torch.Tensor  # [B, N] sign(x)·log1p(|x|) of the numeric fields
    click: torch.Tensor  # [B] float
    conversion: torch.Tensor  # [B] float

    def __len__(self) -> int:
        return int(self.single.shape[0])

    def shares(self, sequence: torch.Tensor) -> bool:
        """Whether ``sequence`` (one of ``sequences``) is one list for every row."""
        return sequence.shape[0] == 1 and len(self) != 1

    def slice(self, index: torch.Tensor | slice) -> Batch:
        """The rows at ``index`` (a tensor of positions copies; a slice gives views)."""
        return Batch(
            self.single[index],
            [s if self.shares(s) else s[index] for s in self.sequences],
            self.dense[index],
            self.click[index],
            self.conversion[index],
        )


def _default(spec: FieldSpec) -> Any:
    feature = CATALOG_BY_NAME.get(spec.name)
    if feature is not None:
        return feature.default
    return 0.0 if spec.kind == "numeric" else ""


def _strings(table: pa.Table, spec: FieldSpec) -> pa.Array:
    if spec.name not in table.column_names:
        return pa.array([str(_default(spec))] * table.num_rows, pa.string())
    column = table[spec.name].combine_chunks()
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.string())
    return pc.fill_null(column, str(_default(spec)))


def _numbers(table: pa.Table, spec: FieldSpec) -> np.ndarray:
    if spec.name not in table.column_names:
        return _clean(np.full(table.num_rows, np.nan), spec)
    column = pc.cast(table[spec.name].combine_chunks(), pa.float64())
    return _clean(column.to_numpy(zero_copy_only=False), spec)


def _clean(values: np.ndarray, spec: FieldSpec) -> np.ndarray:
    """A numeric field's values as the model reads them: NaN (a missing value too) is the
    field's default, ±inf is ±1e12."""
    values = np.asarray(values, np.float64)
    if np.isfinite(values).all():  # the common case, 10x cheaper than nan_to_num
        return values
    default = float(_default(spec))
    cleaned: np.ndarray = np.nan_to_num(values, nan=default, posinf=1e12, neginf=-1e12)
    return cleaned


def _items(strings: pa.Array, max_length: int) -> tuple[pa.Array, np.ndarray]:
    """Sequence strings → (flat items, list offsets) keeping the first ``max_length`` items."""
    # "" would split into [""]: make it null, a sequence with no item.
    strings = pc.if_else(pc.equal(strings, ""), pa.scalar(None, pa.string()), strings)
    lists = pc.list_slice(pc.split_pattern(strings, SEQUENCE_SEPARATOR), 0, max_length)
    flat = pc.list_flatten(lists)
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    return flat, np.asarray(lengths, dtype=np.int64)


_SEARCH_BELOW = 8192  # rows; measured crossover of the two ways below


def _buckets(spec: FieldSpec, values: np.ndarray) -> np.ndarray:
    """Each value's bucket: how many boundaries are ≤ it. A large column takes one vector
    comparison per boundary (2.5x faster than ``np.searchsorted`` on 87k rows); a small one,
    such as a request's, one ``searchsorted`` (15x faster on 200 rows)."""
    if len(values) < _SEARCH_BELOW:
        return np.searchsorted(spec.boundaries, values, side="right").astype(np.int16)
    buckets = np.zeros(len(values), dtype=np.int16)
    for edge in spec.boundaries:
        buckets += values >= edge
    return buckets


@dataclass
class Values:
    """An ID field's values, or a sequence's items, each distinct value once."""

    dictionary: list[str]  # the distinct values
    indices: np.ndarray  # [M] position in ``dictionary`` of every value
    lengths: np.ndarray | None  # [N] items per row (sequences only)


class Columns:
    """A table's fields as the encoder reads them, each worked out once: training counts a
    table's values (admission) and then encodes it, and both read the same columns.

    A field can be *shared*: one value that stands for every row (``RequestColumns``: what
    all of a request's candidates have in common). Its arrays then have one row.
    """

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._numbers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._values: dict[str, Values] = {}

    @classmethod
    def of(cls, table: pa.Table | Columns) -> Columns:
        return table if isinstance(table, Columns) else cls(table)

    @property
    def num_rows(self) -> int:
        return int(self.table.num_rows)

    def shared(self, spec: FieldSpec) -> bool:
        """Whether the field's arrays hold one row that stands for all rows."""
        return False

    def labels(self, name: str) -> np.ndarray:
        """A label column (``click``, ``conversion``), 0 where absent."""
        if name not in self.table.column_names:
            return np.zeros(self.num_rows, dtype=np.float32)
        values = pc.fill_null(self.table[name].combine_chunks(), 0)
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32)

    def numbers(self, spec: FieldSpec) -> tuple[np.ndarray, np.ndarray]:
        """A numeric field's values and their buckets."""
        if spec.name not in self._numbers:
            values = self._read_numbers(spec)
            self._numbers[spec.name] = (values, _buckets(spec, values))
        return self._numbers[spec.name]

    def values(self, spec: FieldSpec) -> Values:
        """An ID field's values, or a sequence field's items."""
        if spec.name not in self._values:
            self._values[spec.name] = self._read_values(spec)
        return self._values[spec.name]

    def _read_numbers(self, spec: FieldSpec) -> np.ndarray:
        return _numbers(self.table, spec)

    def _read_values(self, spec: FieldSpec) -> Values:
        strings, lengths = _strings(self.table, spec), None
        if spec.kind == "sequence":
            strings, lengths = _items(strings, spec.max_length)
        encoded = pc.dictionary_encode(strings)
        return Values(
            encoded.dictionary.to_pylist(),
            encoded.indices.to_numpy(zero_copy_only=False),
            lengths,
        )


class RequestColumns(Columns):
    """One request's candidates (``features.request.RequestRows``) as the encoder reads them,
    straight from the rows' two parts: a table of 200 rows costs more to build and read than
    the model's forward pass. The values read are the ones ``rows_table`` of the same rows
    would give (a test holds the two to the same batch). The shared part's fields, and
    ``user_id``, are shared: read once for all candidates."""

    def __init__(self, rows: RequestRows) -> None:
        super().__init__(pa.table({}))
        self.rows = rows

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    def shared(self, spec: FieldSpec) -> bool:
        return spec.name == "user_id" or spec.name in self.rows.shared

    def labels(self, name: str) -> np.ndarray:
        return np.zeros(self.num_rows, dtype=np.float32)

    def _column(self, spec: FieldSpec) -> Sequence[Any]:
        rows, name = self.rows, spec.name
        if name == "user_id":
            return [rows.user_id]
        if name == "anchor_id":
            return rows.anchor_ids
        if name in rows.shared:
            return [rows.shared[name]]
        return rows.own.get(name) or [None] * len(rows)

    def _read_numbers(self, spec: FieldSpec) -> np.ndarray:
        column = [np.nan if v is None else v for v in self._column(spec)]
        return _clean(np.asarray(column, dtype=np.float64), spec)

    def _read_values(self, spec: FieldSpec) -> Values:
        default = str(_default(spec))
        strings = [default if v is None else str(v) for v in self._column(spec)]
        lengths = None
        if spec.kind == "sequence":
            lists = [s.split(SEQUENCE_SEPARATOR)[: spec.max_length] if s else [] for s in strings]
            lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
            strings = [item for items in lists for item in items]
        positions: dict[str, int] = {}
        indices = [positions.setdefault(s, len(positions)) for s in strings]
        return Values(list(positions), np.asarray(indices, dtype=np.int64), lengths)


class Encoder:
    """Maps sample tables through a ``Vocabulary`` for the model described by ``specs``."""

    def __init__(self, specs: list[FieldSpec], vocab: Vocabulary) -> None:
        self.specs = specs
        self.vocab = vocab
        self.single = [s for s in specs if s.kind != "sequence"]
        self.sequence = [s for s in specs if s.kind == "sequence"]
        self.numeric = [s for s in specs if s.kind == "numeric"]
        self.bucket_labels = {
            s.name: [str(b) for b in range(len(s.boundaries) + 1)] for s in self.numeric
        }
        for spec in specs:
            vocab.entries(spec.vocab)  # default rows exist from the start, in field order

    # -- counting (admission) ----------------------------------------------------------------

    def counts(self, table: pa.Table | Columns) -> dict[str, Counter[str]]:
        """Occurrences of each value per vocabulary in ``table`` (what admission counts)."""
        columns = Columns.of(table)
        counts: dict[str, Counter[str]] = {}
        for spec in self.specs:
            counter = counts.setdefault(spec.vocab, Counter())
            times = columns.num_rows if columns.shared(spec) else 1  # a shared row stands for all
            if spec.kind == "numeric":
                _, buckets = columns.numbers(spec)
                occurrences = np.bincount(buckets, minlength=len(spec.boundaries) + 1) * times
                counter.update({str(b): int(n) for b, n in enumerate(occurrences) if n})
                continue
            values = columns.values(spec)
            occurrences = np.bincount(values.indices, minlength=len(values.dictionary)) * times
            for value, n in zip(values.dictionary, occurrences.tolist(), strict=True):
                if value != "" and n:
                    counter[value] += n
        return counts

    def observe(
        self,
        table: pa.Table | Columns,
        ts: float,
        rules: Mapping[str, AdmissionRule],
        phase: Phase,
    ) -> list[int]:
        """Count ``table``'s values into the vocabulary and admit; return the new rows."""
        new_rows: list[int] = []
        for name, counter in self.counts(table).items():
            new_rows += self.vocab.observe(name, counter, ts, rules[name], phase)
        return sorted(new_rows)

    # -- encoding ----------------------------------------------------------------------------

    def _rows(self, spec: FieldSpec, values: Values) -> np.ndarray:
        if len(values.indices) == 0:
            return np.zeros(0, dtype=np.int64)
        mapping = self.vocab.lookup(spec.vocab, values.dictionary)
        return np.asarray(mapping[values.indices], dtype=np.int64)

    def encode(self, table: pa.Table | Columns) -> Batch:
        """The model's inputs for every row. A shared field's one value is copied to all
        rows, except a shared sequence: it stays one row (``Batch.shares``)."""
        columns = Columns.of(table)
        n = columns.num_rows
        single = np.zeros((n, len(self.single)), dtype=np.int64)
        dense = np.zeros((n, len(self.numeric)), dtype=np.float32)
        numeric_index = 0
        for i, spec in enumerate(self.single):
            if spec.kind == "numeric":
                values, buckets = columns.numbers(spec)
                labels = self.bucket_labels[spec.name]
                if len(buckets) < len(labels):  # a few values (a shared field): just those
                    labels = [labels[b] for b in buckets.tolist()]
                    single[:, i] = self.vocab.lookup(spec.vocab, labels)
                else:
                    single[:, i] = self.vocab.lookup(spec.vocab, labels)[buckets]
                dense[:, numeric_index] = np.sign(values) * np.log1p(np.abs(values))
                numeric_index += 1
            else:
                single[:, i] = self._rows(spec, columns.values(spec))
        sequences = []
        for spec in self.sequence:
            items = columns.values(spec)
            lengths = items.lengths
            assert lengths is not None
            rows = self._rows(spec, items)
            padded = np.full((len(lengths), spec.max_length), PADDING_ROW, dtype=np.int64)
            if len(rows):
                # Item j of row i sits at padded[i, j]: positions from the list offsets.
                owners = np.repeat(np.arange(len(lengths)), lengths)
                starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
                padded[owners, np.arange(len(rows)) - starts] = rows
            sequences.append(torch.from_numpy(padded))
        return Batch(
            torch.from_numpy(single),
            sequences,
            torch.from_numpy(dense),
            torch.from_numpy(columns.labels("click")),
            torch.from_numpy(columns.labels("conversion")),
        )


def rows_table(rows: Iterable[Mapping[str, Any]], columns: Iterable[str]) -> pa.Table:
    """Feature dicts (the scorer's request) → a table the encoder reads, one row per dict."""
    rows = list(rows)
    data: dict[str, list[Any]] = {}
    for name in columns:
        data[name] = [row.get(name) for row in rows]
    arrays = {}
    for name, values in data.items():
        feature = CATALOG_BY_NAME.get(name)
        if feature is not None and feature.kind == "numeric":
            arrays[name] = pa.array(values, pa.float64())
        else:
            arrays[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(arrays)
