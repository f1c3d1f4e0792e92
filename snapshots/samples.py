"""Sample files: the §5 schema, the lander that writes windows, and readers.

The lander keeps, per (window, partition), the latest version of each sample and rewrites that
window's file whole (temporary file, then rename), so writes are idempotent: a replay of the
same samples gives the same file. After a restart it merges into what the file already holds.
See ``snapshots.layout`` for the folder layout and the markers.

A stream worker does not rewrite a window's file after every batch (that made a live worker's
writing grow with the square of a window's samples): ``land`` writes a partition's changed
windows every ``every`` seconds of event time, and always before a window is marked or left
behind the horizon. Until then the samples are safe in the ``<prefix>.samples`` topic, which
serves as the lander's log: ``add`` is told each sample's offset there, ``land`` records per
partition the offset below which everything is in files (``_landed/p<partition>.json``), and
a worker taking a partition over reads the log from that offset again (``recover``).
"""

from __future__ import annotations

import json
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
    return _with_features(row, sample.features or {})


def document_row(document: Mapping[str, Any]) -> dict[str, Any]:
    """A sample as sent to ``<prefix>.samples`` (the §5 columns as one JSON object) as one file
    row, the same row ``sample_row`` gives for the sample it was made from."""
    return _with_features({name: document[name] for name in LABEL_COLUMNS}, document)


def _with_features(row: dict[str, Any], features: Mapping[str, Any]) -> dict[str, Any]:
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
    unlanded: int | None = None  # the lowest log offset among the rows not in the file yet


def _take(buffer: WindowBuffer, row: dict[str, Any]) -> bool:
    """Keep ``row`` when it is a newer version than the buffer holds; True when kept."""
    current = buffer.rows.get(row["sample_id"])
    if current is None or row["version"] > current["version"]:
        buffer.rows[row["sample_id"]] = row
        return True
    return False


LANDED = "_landed"  # per partition: how far the lander's log is in files (see ``land``)


class SampleLander:
    """Writes one partition's samples into window files; marks windows that are complete."""

    def __init__(
        self,
        root: str,
        partitions: int,
        click_window: float,
        horizon: float,
        log: str | None = None,
    ) -> None:
        self.root = Root(root)
        self.partitions = partitions
        self.click_window = click_window
        self.horizon = horizon  # after window end + horizon, no new version can come
        self.log = log  # the name of the log whose offsets ``add`` is given (a topic)
        self.buffers: dict[tuple[float, int], WindowBuffer] = {}
        self._swept: dict[int, float] = {}
        self._log_end: dict[int, int] = {}  # per partition: one past the last offset added
        self._landed: dict[int, int] = {}  # per partition: the offset ``_landed/`` holds
        self._written_at: dict[int, float] = {}  # per partition: watermark at the last write
        self.files_written = 0
        self.rows_written = 0

    def add(
        self, partition: int, samples: Iterable[Any], offsets: Iterable[int] | None = None
    ) -> None:
        """Take ``samples`` (latest version wins); ``offsets``: where each one is in the log."""
        rows = (sample_row(sample) for sample in samples)
        self.add_rows(partition, rows, offsets)

    def add_rows(
        self,
        partition: int,
        rows: Iterable[dict[str, Any]],
        offsets: Iterable[int] | None = None,
    ) -> None:
        logged = iter(offsets) if offsets is not None else None
        for row in rows:
            offset = next(logged) if logged is not None else None
            key = (window_start(row["ts"]), partition)
            buffer = self.buffers.get(key)
            if buffer is None:
                buffer = self.buffers[key] = WindowBuffer()
            if not buffer.loaded:
                self._load(key, buffer)
            if _take(buffer, row):
                buffer.dirty = True
                if offset is not None and (buffer.unlanded is None or offset < buffer.unlanded):
                    buffer.unlanded = offset
            if offset is not None:
                self._log_end[partition] = max(self._log_end.get(partition, 0), offset + 1)

    def _path(self, key: tuple[float, int]) -> str:
        return self.root.join(window_folder(key[0]), part_name(key[1]))

    def _load(self, key: tuple[float, int], buffer: WindowBuffer) -> None:
        """Merge what an earlier run already wrote for this window and partition."""
        buffer.loaded = True
        path = self._path(key)
        if not self.root.exists(path):
            return
        for row in self.root.read_table(path).to_pylist():
            _take(buffer, row)

    def flush(self, partition: int | None = None) -> int:
        """Rewrite every window file (of ``partition``) that changed; return how many."""
        written = 0
        for key, buffer in self.buffers.items():
            if buffer.dirty and (partition is None or key[1] == partition):
                self._write(key, buffer)
                written += 1
        return written

    def _write(self, key: tuple[float, int], buffer: WindowBuffer) -> None:
        rows = sorted(buffer.rows.values(), key=lambda r: r["sample_id"])
        self.root.write_atomic(self._path(key), table_bytes(rows_table(rows)))
        self.files_written += 1
        self.rows_written += len(rows)
        buffer.dirty = False
        buffer.unlanded = None

    def land(
        self, partition: int, watermark: float, windows: Iterable[float], every: float
    ) -> list[str]:
        """What a stream worker does after adding a batch's samples of ``partition``.

        Writes the partition's changed window files when ``every`` seconds of event time have
        passed since it last wrote them (0: at every call), and always those of the windows
        it marks or leaves behind the horizon; marks ``windows`` (see ``mark``); drops the
        windows no new version can reach; records how far the log has landed. Returns the
        window folders that became complete.
        """
        if math.isfinite(watermark):
            last = self._written_at.get(partition)
            if last is None:
                self._written_at[partition] = last = watermark
            if watermark - last >= every:
                self.flush(partition)
                self._written_at[partition] = watermark
        done = self.mark(partition, windows, watermark)
        self.evict(partition, watermark)
        self._record_landed(partition)
        return done

    def unlanded(self, partition: int) -> int | None:
        """The lowest log offset of ``partition`` whose sample is not in a file yet (with
        every added sample in a file, the end of what was added); None: no offset known."""
        waiting = [
            b.unlanded
            for (_, p), b in self.buffers.items()
            if p == partition and b.dirty and b.unlanded is not None
        ]
        return min(waiting) if waiting else self._log_end.get(partition)

    def _landed_path(self, partition: int) -> str:
        return self.root.join(LANDED, f"p{partition:03d}.json")

    def _record_landed(self, partition: int) -> None:
        offset = self.unlanded(partition)
        if self.log is None or offset is None or offset == self._landed.get(partition):
            return
        document = {"log": self.log, "partition": partition, "offset": offset}
        self.root.write_atomic(self._landed_path(partition), json.dumps(document).encode())
        self._landed[partition] = offset

    def resume_offset(self, partition: int) -> int:
        """Where ``partition``'s log is to be read again after a restart or a hand-over: the
        offset ``land`` recorded last, or 0 when it recorded none for this log."""
        path = self._landed_path(partition)
        if not self.root.exists(path):
            return 0
        document = json.loads(self.root.read_bytes(path))
        return int(document["offset"]) if document.get("log") == self.log else 0

    def recover(
        self, partition: int, entries: Iterable[tuple[int, dict[str, Any]]], end: int
    ) -> int:
        """Take back the samples of ``partition``'s log read from ``resume_offset`` up to
        ``end`` (entries: offset, the sample's row, ``document_row``), which may not be in
        files; return how many were read."""
        taken = list(entries)
        self.add_rows(partition, [row for _, row in taken], [offset for offset, _ in taken])
        self._log_end[partition] = max(self._log_end.get(partition, 0), end)
        self._landed.pop(partition, None)
        return len(taken)

    def release(self, partition: int) -> None:
        """Write ``partition``'s changed files, record how far its log landed and forget it
        (the partition moved to another worker, which takes it over from here)."""
        self.flush(partition)
        self._record_landed(partition)
        for key in [k for k in self.buffers if k[1] == partition]:
            del self.buffers[key]
        for kept in (self._log_end, self._landed, self._written_at, self._swept):
            kept.pop(partition, None)

    def mark(self, partition: int, windows: Iterable[float], watermark: float) -> list[str]:
        """Mark ``windows`` complete for ``partition`` (writing their changed files first).

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
            buffer = self.buffers.get((start, partition))
            if buffer is not None and buffer.dirty:  # a marked window's file holds its samples
                self._write((start, partition), buffer)
            folder = self.root.join(window_folder(start))
            self.root.write_atomic(f"{folder}/{partition_marker(partition)}", b"")
            if self._all_marked(folder) and not self.root.exists(f"{folder}/{SUCCESS}"):
                self.root.write_atomic(f"{folder}/{SUCCESS}", b"")
                completed.append(window_folder(start))
        return completed

    def evict(self, partition: int, watermark: float) -> None:
        """Drop the buffers of windows no new version can reach any more (written first)."""
        for key in [k for k in self.buffers if k[1] == partition]:
            if watermark > key[0] + WINDOW_SECONDS + self.horizon:
                if self.buffers[key].dirty:
                    self._write(key, self.buffers[key])
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
