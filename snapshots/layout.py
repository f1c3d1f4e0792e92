"""Sample windows on disk (DESIGN §5): ``dt=YYYY-MM-DD/hour=HH/quarter=Q`` folders of Parquet.

A window is 15 minutes of impression event time. Each stream partition writes one file per
window, ``part-p<partition>-<seq>.parquet``, rewritten whole (write to a temporary name, then
rename) with the latest version of each of its samples, so a replay rewrites the same file and
never adds a second copy. A partition marks a window ``_SUCCESS.p<partition>`` once its
watermark has passed the window's end plus the click window (its file written first); the
window's ``_SUCCESS`` follows when every partition has marked it. ``_landed/p<partition>.json``
at the root says up to which offset of ``<prefix>.samples`` that partition's samples are in
files (see ``snapshots.samples.SampleLander.land``). The root may be a local path or a pyarrow
filesystem URI.

>>> window_start(1793491200.0 + 3600 + 17 * 60)  # 01:17 -> the 01:15 window
1793495700.0
>>> window_folder(1793495700.0)
'dt=2026-11-01/hour=01/quarter=1'
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Final

WINDOW_SECONDS: Final = 900.0
SUCCESS: Final = "_SUCCESS"


def window_start(ts: float, width: float = WINDOW_SECONDS) -> float:
    """Start (epoch seconds) of the window holding event time ``ts``."""
    return math.floor(ts / width) * width


def window_folder(start: float) -> str:
    """The relative folder of the 15-minute window starting at ``start``."""
    moment = datetime.fromtimestamp(start, tz=UTC)
    return f"dt={moment:%Y-%m-%d}/hour={moment:%H}/quarter={moment.minute // 15}"


def parse_window_folder(folder: str) -> float:
    """Inverse of ``window_folder``: the window's start.

    >>> parse_window_folder("dt=2026-11-01/hour=01/quarter=1")
    1793495700.0
    """
    parts = dict(part.split("=", 1) for part in folder.strip("/").split("/")[-3:])
    day = datetime.strptime(parts["dt"], "%Y-%m-%d").replace(tzinfo=UTC)
    return day.timestamp() + int(parts["hour"]) * 3600 + int(parts["quarter"]) * WINDOW_SECONDS


def part_name(partition: int, seq: int = 0) -> str:
    return f"part-p{partition:03d}-{seq:04d}.parquet"


def partition_marker(partition: int) -> str:
    return f"{SUCCESS}.p{partition:03d}"


def window_closed(start: float, watermark: float, click_window: float) -> bool:
    """True once the watermark has passed the window's end plus the click window."""
    return watermark > start + WINDOW_SECONDS + click_window
