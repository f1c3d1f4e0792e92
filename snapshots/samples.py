"""Sample files: the §5 schema, the lander that writes windows, and readers.

The lander keeps, per (window, partition), the latest version of each sample and rewrites that
window's file whole on ``flush`` (temporary file, then rename), so writes are idempotent: a
replay of the same samples gives the same file. After a restart it merges into what the file
already holds. See ``snapshots.layout`` for the folder layout and the markers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from features.catalog import CATALOG
from snapshots.layout import (
    SUCCESS,
    WINDOW_SECONDS,
    parse_window_folder,
    part_name,
    partition_marker,
    window_closed,
    window_folder,
    window_start,
)
from snapshots.storage import Root

LABEL_FIELDS: list[pa.Field] = [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("version", pa.int32(), nullable=False),
    pa.field("final", pa.bool_(), nullable=False),
    pa.field("ts", pa.float64(), nullable=False),
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("user_id", pa.string(), nullable=False),
    pa.field("anchor_id", pa.string(), nullable=False),
    pa.field("click", pa.int8(), nullable=False),
    pa.field("conversion", pa.int8(), nullable=False),
    pa.field("watch_seconds", pa.float64(), nullable=False),
]
FEATURE_FIELDS: list[pa.Field] = [
    pa.field(f.name, pa.float64() if f.kind == "numeric" else pa.string()) for f in CATALOG
]
SCHEMA = pa.schema(LABEL_FIELDS + FEATURE_FIELDS)
SCHEMA_VERSION = 1
LABEL_COLUMNS = [f.name for f in LABEL_FIELDS]


def sample_row(sample: Any) -> dict[str, Any]:
    """A ``streams.join.Sample`` (or any object with its fields) as one file row."""
    row = {name: getattr(sample, name) for name in LABEL_COLUMNS}
    features = sample.features or {}
    for feature in CATALOG:
        row[feature.name] = features.get(feature.name, feature.default)
    return row


def rows_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=SCHEMA)


def validate_table(table: pa.Table) -> None:
    """Raise ValueError when ``table`` does not follow the sample schema."""
    missing = [name for name in SCHEMA.names if name not in table.column_names]
    if missing:
        raise ValueError(f"sample file misses columns {missing}")
    bad = (table["conversion"].to_pylist(), table["click"].to_pylist())
    if any(c > k for c, k in zip(*bad, strict=True)):
        raise ValueError("a sample has conversion = 1 with click = 0")


def table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


@dataclass
class WindowBuffer:
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirty: bool = False
    loaded: bool = False


class SampleLander:
    """Writes one partition's samples into window files; marks windows that are complete."""

    def __init__(self, root: str, partitions: int, click_window: float, horizon: float) -> None:
        self.root = Root(root)
        self.partitions = partitions
        self.click_window = click_window
        self.horizon = horizon  # after window end + horizon, no new version can come
        self.buffers: dict[tuple[float, int], WindowBuffer] = {}
        self._swept: dict[int, float] = {}
        self.rows_written = 0

    def add(self, partition: int, samples: Iterable[Any]) -> None:
        for sample in samples:
            key = (window_start(sample.ts), partition)
            buffer = self.buffers.get(key)
            if buffer is None:
                buffer = self.buffers[key] = WindowBuffer()
            if not buffer.loaded:
                self._load(key, buffer)
            current = buffer.rows.get(sample.sample_id)
            if current is None or sample.version > current["version"]:
                buffer.rows[sample.sample_id] = sample_row(sample)
                buffer.dirty = True

    def _path(self, key: tuple[float, int]) -> str:
        return self.root.join(window_folder(key[0]), part_name(key[1]))

    def _load(self, key: tuple[float, int], buffer: WindowBuffer) -> None:
        """Merge what an earlier run already wrote for this window and partition."""
        buffer.loaded = True
        path = self._path(key)
        if not self.root.exists(path):
            return
        for row in self.root.read_table(path).to_pylist():
            current = buffer.rows.get(row["sample_id"])
            if current is None or row["version"] > current["version"]:
                buffer.rows[row["sample_id"]] = row

    def flush(self) -> int:
        """Rewrite every window file that changed; return how many were written."""
        written = 0
        for key, buffer in self.buffers.items():
            if not buffer.dirty:
                continue
            rows = sorted(buffer.rows.values(), key=lambda r: r["sample_id"])
            self.root.write_atomic(self._path(key), table_bytes(rows_table(rows)))
            self.rows_written += len(rows)
            buffer.dirty = False
            written += 1
        return written

    def mark(self, partition: int, windows: Iterable[float], watermark: float) -> list[str]:
        """Mark ``windows`` complete for ``partition`` (call after ``flush``).

        Also marks every window folder other partitions created that this one has not marked
        yet and that its watermark has passed (a partition that had no event there, or none at
        all, still has to say so); that look at the folders happens once per window the
        watermark passes. Returns the window folders that became complete for every partition
        (``_SUCCESS``).
        """
        wanted = sorted(set(windows))
        if not math.isfinite(watermark):
            return []
        passed = window_start(watermark - self.click_window) - WINDOW_SECONDS
        if wanted or passed > self._swept.get(partition, float("-inf")):
            self._swept[partition] = passed
            first = wanted[0] if wanted else float("inf")
            folders = self._window_folders()
            wanted += self._unmarked(folders, partition, watermark, before=first)
        return self._mark_windows(partition, wanted)

    def sweep(self, watermarks: Mapping[int, float]) -> list[str]:
        """Mark, for each partition, the window folders its watermark passed that it has not
        marked yet; returns the folders that became complete (``_SUCCESS``).

        ``mark`` looks at the folders only when a watermark moves on. A watermark that stopped
        (an idle partition, or every partition at the end of a replay) would never see a
        folder another partition created after that look, and the window would never
        complete: the stream worker calls this now and then for the partitions it owns.
        """
        folders = self._window_folders()
        completed = []
        for partition, watermark in watermarks.items():
            if math.isfinite(watermark):
                late = self._unmarked(folders, partition, watermark, before=float("inf"))
                completed += self._mark_windows(partition, late)
        return completed

    def _unmarked(
        self, folders: dict[str, set[str]], partition: int, watermark: float, before: float
    ) -> list[float]:
        """Starts of the closed windows before ``before`` that ``partition`` has not marked."""
        marker = partition_marker(partition)
        starts = []
        for folder, names in folders.items():
            start = parse_window_folder(folder)
            if (
                start < before
                and marker not in names
                and window_closed(start, watermark, self.click_window)
            ):
                starts.append(start)
        return starts

    def _mark_windows(self, partition: int, starts: Iterable[float]) -> list[str]:
        completed = []
        for start in starts:
            folder = self.root.join(window_folder(start))
            self.root.write_atomic(f"{folder}/{partition_marker(partition)}", b"")
            if self._all_marked(folder) and not self.root.exists(f"{folder}/{SUCCESS}"):
                self.root.write_atomic(f"{folder}/{SUCCESS}", b"")
                completed.append(window_folder(start))
        return completed

    def evict(self, partition: int, watermark: float) -> None:
        """Drop the buffers of windows no new version can reach any more."""
        for key in [k for k in self.buffers if k[1] == partition]:
            if watermark > key[0] + WINDOW_SECONDS + self.horizon and not self.buffers[key].dirty:
                del self.buffers[key]

    def _window_folders(self) -> dict[str, set[str]]:
        """Relative window folder -> names of the files in it."""
        selector = pafs.FileSelector(self.root.path, recursive=True, allow_not_found=True)
        base = len(self.root.path.rstrip("/")) + 1
        folders: dict[str, set[str]] = {}
        for info in self.root.fs.get_file_info(selector):
            if info.type == pafs.FileType.File and "/quarter=" in info.path:
                folder, name = info.path[base:].rsplit("/", 1)
                folders.setdefault(folder, set()).add(name)
        return folders

    def _all_marked(self, folder: str) -> bool:
        names = {path.rsplit("/", 1)[-1] for path in self.root.list_files(folder)}
        return all(partition_marker(p) in names for p in range(self.partitions))


def read_window(root: str, start: float, latest: bool = True) -> pa.Table:
    """All samples of one window (every partition's file), latest version per sample."""
    store = Root(root)
    folder = store.join(window_folder(start))
    tables = [
        store.read_table(p) for p in sorted(store.list_files(folder)) if p.endswith(".parquet")
    ]
    if not tables:
        return SCHEMA.empty_table()
    table = pa.concat_tables(tables)
    return latest_versions(table) if latest else table


def read_completed(root: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Every sample of every completed window under ``root``, latest version per sample."""
    tables = [read_window(root, parse_window_folder(folder)) for folder in completed_windows(root)]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    return table if columns is None else table.select(list(columns))


def latest_versions(table: pa.Table) -> pa.Table:
    """Keep the highest version of each sample_id."""
    if table.num_rows == 0:
        return table
    order = table.sort_by([("sample_id", "ascending"), ("version", "descending")])
    ids = order["sample_id"].to_pylist()
    keep = [i for i in range(len(ids)) if i == 0 or ids[i] != ids[i - 1]]
    return order.take(keep)


def completed_windows(root: str) -> list[str]:
    """Window folders (relative) that carry ``_SUCCESS``, oldest first."""
    store = Root(root)
    selector = pafs.FileSelector(store.path, recursive=True, allow_not_found=True)
    found = []
    for info in store.fs.get_file_info(selector):
        if info.type == pafs.FileType.File and info.path.endswith("/" + SUCCESS):
            found.append(info.path[len(store.path.rstrip("/")) + 1 : -len(SUCCESS) - 1])
    return sorted(found)
