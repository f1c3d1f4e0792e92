"""The serving model and the puller that keeps it current.

``ModelHolder.current`` is one immutable ``Served`` object; a request takes it once and
finishes on it, so swapping in a new one (a plain attribute assignment) never disturbs a
request in flight. The puller follows LATEST (polled every ``poll_interval_seconds``, and at
once when the ``model-updates`` topic announces a version), verifies every file's sha256 and
the model config against this code, loads into a new object and swaps it in, keeping the
previous one for rollback. A version that fails is logged, counted and never served; the
old one keeps serving.

``freeze_heap`` is what ``liverank serve`` runs after every swap (``on_swap``): see there.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from liverank.errors import LiverankError
from liverank.settings import Settings
from trainer.checkpoints import CheckpointStore
from trainer.learner import Learner
from trainer.serialize import load_learner

log = logging.getLogger("liverank.scorer")


@dataclass(frozen=True)
class Served:
    version: str
    learner: Learner
    manifest: dict[str, Any]
    loaded_at: float

    @property
    def window_end(self) -> float:
        return float(self.manifest.get("window", {}).get("end", 0.0))


def freeze_heap() -> None:
    """Collect, then exempt every object alive from Python's cyclic garbage collector
    (``gc.freeze``).

    A scorer holds ~390,000 collector-tracked objects once torch, FastAPI and a model are
    loaded, and a full collection walks them all: 210 ms here, every request waiting behind
    it (under load one ran now and then: 236 and 305 ms in one 20 s bench run). Frozen
    objects are still freed by reference counting, and a swapped-out model is: it holds no
    reference cycles (``tests/unit/test_scorer.py`` checks). Only a cycle among frozen
    objects would stay, so the collection runs first; after the first freeze it walks only
    what came since."""
    gc.collect()
    gc.freeze()


class ModelHolder:
    def __init__(
        self,
        settings: Settings,
        store: CheckpointStore | None = None,
        on_swap: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or CheckpointStore(settings.checkpoint_root)
        self.current: Served | None = None
        self.previous: Served | None = None
        self.refused: dict[str, str] = {}  # version -> why it was not loaded
        self.swaps = 0
        self.avoid: str | None = None  # rolled back from: do not follow LATEST back to it
        self._lock = threading.Lock()  # one load at a time
        self.on_swap = on_swap  # run after each swap (``liverank serve``: ``freeze_heap``)

    def load(self, version: str) -> Served:
        learner, manifest = load_learner(self.store, version, self.settings)
        learner.model.eval()
        return Served(version, learner, manifest, time.time())

    def swap(self, served: Served) -> None:
        if self.current is not None and self.current.version != served.version:
            self.previous = self.current
        self.current = served
        self.swaps += 1
        log.info("serving %s", served.version)
        if self.on_swap is not None:
            self.on_swap()

    def check(self, force: bool = False) -> str | None:
        """Load LATEST if it names a version not served yet; return the serving version."""
        with self._lock:
            try:
                latest = self.store.latest()
            except LiverankError as exc:
                log.warning("LATEST unreadable, keep serving: %s", exc)
                return self.current.version if self.current else None
            if latest is None:
                return self.current.version if self.current else None
            version = latest.version
            if self.current is not None and self.current.version == version:
                return version
            if version == self.avoid and not force:
                return self.current.version if self.current else None
            if version in self.refused and not force:
                return self.current.version if self.current else None
            try:
                served = self.load(version)
            except LiverankError as exc:
                self.refused[version] = str(exc)
                log.error("refused %s, keep serving %s: %s", version, self._name(), exc)
                return self.current.version if self.current else None
            self.avoid = None
            self.swap(served)
            return version

    def rollback(self, version: str | None = None) -> Served:
        """Serve the previous model (or ``version``), and stay there until LATEST moves on."""
        with self._lock:
            if version is None:
                if self.previous is None:
                    raise LiverankError("no previous model to roll back to")
                target = self.previous
            else:
                target = self.load(version)
            latest = self.store.latest()  # stay off it until LATEST names another version
            current = self.current.version if self.current else None
            self.avoid = latest.version if latest else current
            self.swap(target)
            return target

    def _name(self) -> str:
        return self.current.version if self.current else "nothing"


class Puller:
    """Polls LATEST in a thread; ``nudge()`` (a model-updates message) checks at once."""

    def __init__(self, holder: ModelHolder, interval: float) -> None:
        self.holder = holder
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="liverank-puller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def nudge(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.holder.check()
            except Exception:  # never let the puller die: log and poll again
                log.exception("checking LATEST failed")
            self._wake.wait(self.interval)
            self._wake.clear()
