"""Request-time snapshots written off the request path.

``offer`` never blocks: the snapshot goes into a bounded queue, or is counted as dropped when
the queue is full. A thread drains the queue into the snapshot store in batches.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

from snapshots.store import SnapshotStore

log = logging.getLogger("liverank.scorer")


class SnapshotWriter:
    def __init__(self, store: SnapshotStore, capacity: int, batch: int = 64) -> None:
        self.store = store
        self.queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(capacity)
        self.batch = batch
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="liverank-snapshots", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, request_id: str, snapshot: Mapping[str, Mapping[str, Any]]) -> bool:
        try:
            self.queue.put_nowait((request_id, {a: dict(v) for a, v in snapshot.items()}))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop."""
        self.queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            items = [item]
            while len(items) < self.batch:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            done = None in items
            pending = [i for i in items if i is not None]
            for request_id, snapshot in pending:
                try:
                    self.store.put(request_id, snapshot)
                    self.written += 1
                except Exception as exc:  # the store is down: count, go on serving
                    self.failed += 1
                    log.warning("snapshot %s not written: %s", request_id, exc)
            if done:
                return
