"""Sample windows for training: which are complete, reading them, the held-out slice.

A fixed share of samples (by a hash of ``sample_id``) is never trained on in any job; the
gate and the manifests' metrics are computed on it, so the candidate and the serving model
are judged on samples neither has seen.

>>> holdout_mask(pa.array(["r1:a1", "r2:a2", "r3:a3"]), percent=30).to_pylist()
[False, True, False]
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from snapshots.layout import WINDOW_SECONDS, parse_window_folder
from snapshots.samples import SCHEMA, completed_windows, read_window

DAY = 86400.0


def closed_windows(root: str) -> list[float]:
    """Starts of the windows marked ``_SUCCESS`` under ``root``, oldest first."""
    return sorted(parse_window_folder(folder) for folder in completed_windows(root))


def day_start(ts: float) -> float:
    return ts - ts % DAY


def window_end(start: float) -> float:
    return start + WINDOW_SECONDS


def holdout_mask(sample_ids: pa.Array | pa.ChunkedArray, percent: int) -> pa.Array:
    """True for the samples held out (``crc32(sample_id) % 100 < percent``)."""
    values = sample_ids.to_pylist()
    return pa.array([zlib.crc32(str(v).encode()) % 100 < percent for v in values], pa.bool_())


def split(table: pa.Table, percent: int) -> tuple[pa.Table, pa.Table]:
    """(training part, held-out part) of ``table``."""
    if percent <= 0 or table.num_rows == 0:
        return table, table.slice(0, 0)
    mask = holdout_mask(table["sample_id"], percent)
    return table.filter(pc.invert(mask)), table.filter(mask)


class WindowReader:
    """Reads windows (latest versions), keeping the ones it read for reuse."""

    def __init__(self, root: str, cache_windows: int = 200) -> None:
        self.root = root
        self.cache: dict[float, pa.Table] = {}
        self.cache_windows = cache_windows

    def window(self, start: float) -> pa.Table:
        table = self.cache.get(start)
        if table is None:
            table = read_window(self.root, start)
            self.cache[start] = table
            while len(self.cache) > self.cache_windows:
                del self.cache[min(self.cache)]
        return table

    def windows(self, starts: Iterable[float]) -> pa.Table:
        tables = [self.window(start) for start in starts]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return SCHEMA.empty_table()
        return pa.concat_tables(tables, promote_options="default")
