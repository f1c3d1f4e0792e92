"""Request-time snapshots written off the request path.

``offer`` never blocks: the snapshot goes into a bounded queue, or is counted as dropped when
the queue is full. A thread drains the queue into the snapshot store, each drained batch in
one round trip (``put_many``). The request path hands over its ``RequestRows`` as they are
(built for that request, never changed after): laying out and writing the cell is the
thread's work.
"""

from __future__ import annotations

import logging
import queue
import threading

from features.request import RequestRows
from snapshots.store import SnapshotStore

log = logging.getLogger("liverank.scorer")


class SnapshotWriter:
    def __init__(self, store: SnapshotStore, capacity: int, batch: int = 16) -> None:
        self.store = store
        self.queue: queue.Queue[tuple[str, RequestRows] | None] = queue.Queue(capacity)
        self.batch = batch
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="liverank-snapshots", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, request_id: str, rows: RequestRows) -> bool:
        try:
            self.queue.put_nowait((request_id, rows))
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
            if pending:
                try:
                    self.store.put_many(pending)
                    self.written += len(pending)
                except Exception as exc:  # the store is down: count, go on serving
                    self.failed += len(pending)
                    log.warning("%d snapshots not written: %s", len(pending), exc)
            if done:
                return
