"""The training jobs (``liverank train ...``), all on event time.

- ``offline(day)``: the day's closed windows, full admission thresholds → an ``offline``
  version (the base). It continues from the newest offline version when there is one.
  Written and verified, not yet serving: ``warm_restart`` makes it so.
- ``warm_restart(base)``: load a base, sync its vocabulary with the serving model's (admit the
  IDs the day admitted, with their rows; evict IDs unseen for ``vocab_ttl_days``), publish it
  through the gate and reset the incremental chain to it.
- ``incremental``: for the newest closed 15-minute window after the chain's last one, build
  a candidate (``from_base``: today's base trained on today's windows so far; ``chained``: the
  serving model trained on the windows since its last), gate it and publish it. A newer
  offline base is adopted first (``trainer.auto_restart``): the daily restart.

The chain's state (base, last window, windows the gate refused, the last gate decision) is
``trainer.json`` next to LATEST, so a restarted trainer carries on where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from prometheus_client import CollectorRegistry, Counter, Gauge

from liverank.errors import LiverankError
from liverank.settings import Settings
from snapshots.layout import SUCCESS, WINDOW_SECONDS, window_folder
from snapshots.storage import Root
from trainer.checkpoints import STATE, CheckpointStore, Kind, version_name
from trainer.data import DAY, WindowReader, closed_windows, day_start, split
from trainer.gate import GateDecision, Scored, gate
from trainer.learner import FitStats, Learner, label_column
from trainer.notify import NoNotifier, Notifier
from trainer.serialize import learner_files, load_learner

log = logging.getLogger("liverank.trainer")


class TrainerError(LiverankError):
    """The trainer cannot go on; the message says which command to run first."""


@dataclass
class WindowResult:
    window_start: float
    version: str | None
    decision: GateDecision
    samples: int
    train_seconds: float
    latency_seconds: float | None  # the window's _SUCCESS → LATEST (local roots only)


class TrainerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.publishes = Counter(
            "liverank_trainer_publishes",
            "Versions LATEST moved to",
            ["job"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "liverank_trainer_gate_refusals", "Candidates the gate refused", registry=self.registry
        )
        self.window_end = Gauge(
            "liverank_trainer_published_window_end",
            "Event-time end of the newest published window",
            registry=self.registry,
        )
        self.latency = Gauge(
            "liverank_trainer_publish_latency_seconds",
            "A window's _SUCCESS to its version in LATEST",
            registry=self.registry,
        )
        self.rate = Gauge(
            "liverank_trainer_samples_per_second", "Training throughput", registry=self.registry
        )


class Trainer:
    def __init__(
        self,
        settings: Settings,
        store: CheckpointStore | None = None,
        notifier: Notifier | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or CheckpointStore(settings.checkpoint_root)
        self.reader = WindowReader(settings.samples_root)
        self.samples = Root(settings.samples_root)
        self.notifier = notifier or NoNotifier()
        self.say = say or (lambda line: log.info("%s", line))
        self.metrics = TrainerMetrics()
        self._loaded: dict[str, tuple[Learner, dict[str, Any]]] = {}

    # -- state -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return self.store.trainer_state()

    def save_state(self, **changes: Any) -> dict[str, Any]:
        state = {**self.state(), **changes}
        data = (json.dumps(state, indent=2, sort_keys=True) + "\n").encode()
        self.store.root.write_atomic(self.store.root.join(STATE), data)
        return state

    def load(self, version: str, copy: bool = True) -> tuple[Learner, dict[str, Any]]:
        """A version's learner (versions read once are kept); ``copy=False`` for read-only use
        (scoring), a private copy otherwise (training changes it)."""
        if version not in self._loaded:
            if len(self._loaded) >= 3:
                self._loaded.pop(next(iter(self._loaded)))
            self._loaded[version] = load_learner(self.store, version, self.settings)
        learner, manifest = self._loaded[version]
        return (learner.clone() if copy else learner), manifest

    # -- sets --------------------------------------------------------------------------------

    def _split(self, starts: list[float]) -> tuple[pa.Table, pa.Table]:
        """(training part, held-out part) of the windows at ``starts``."""
        return split(self.reader.windows(starts), self.settings.trainer.holdout_percent)

    def _held_out(self, starts: list[float]) -> pa.Table:
        return self._split(starts)[1]

    def gate_sets(self, newest: float, closed: list[float]) -> dict[str, pa.Table]:
        """The held-out slices the gate compares on: the newest window, and the windows
        before it (a candidate must not get worse on what it already knew)."""
        earlier = [w for w in closed if w < newest][-self.settings.trainer.gate_windows :]
        return {"newest": self._held_out([newest]), "recent": self._held_out(earlier)}

    # -- publishing --------------------------------------------------------------------------

    def _judge(
        self, learner: Learner, sets: dict[str, pa.Table], gated: bool
    ) -> tuple[GateDecision, dict[str, dict[str, float]]]:
        """Score the held-out sets with the candidate and the serving model; gate."""
        current = None
        latest = self.store.latest()
        if gated and latest is not None:
            current, _ = self.load(latest.version, copy=False)
        scored = {}
        for name, table in sets.items():
            if table.num_rows == 0:
                continue
            p_ctr, _, p_ctcvr = learner.predict(table)
            theirs = None
            if current is not None:
                s_ctr, _, s_ctcvr = current.predict(table)
                theirs = (s_ctr, s_ctcvr)
            scored[name] = Scored(
                label_column(table, "click"),
                label_column(table, "conversion"),
                (p_ctr, p_ctcvr),
                theirs,
            )
        trainer = self.settings.trainer
        decision = gate(
            learner.finite(),
            scored,
            trainer.gate_auc_margin,
            trainer.gate_logloss_margin,
            seed=trainer.seed,
        )
        if not gated and decision.accepted:
            decision = GateDecision(True, "not gated (--force)", decision.candidate, {})
        return decision, decision.candidate

    def _write(
        self,
        learner: Learner,
        *,
        kind: Kind,
        job: str,
        window: tuple[float, float],
        base_version: str | None,
        samples: int,
        metrics: dict[str, float],
        decision: GateDecision,
    ) -> dict[str, Any]:
        latest = self.store.latest()
        version = version_name(window[1], kind, self.store.next_sequence())
        dropped = learner.dropped_rows()
        fields = {
            "kind": kind,
            "job": job,
            "base_version": base_version,
            "parent_version": latest.version if latest else None,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "window": {"start": window[0], "end": window[1]},
            "samples": samples,
            "trained_samples": learner.trained_samples,
            "metrics": {k: v for k, v in metrics.items() if k != "samples"},
            "gate": {"accepted": decision.accepted, "reason": decision.reason},
            "vocabulary": {"ids": len(learner.vocab) - len(dropped), "dropped": len(dropped)},
            "model_config": learner.config.to_json(),
            "restart_policy": self.settings.trainer.restart_policy,
        }
        return self.store.write_version(version, learner_files(learner), fields)

    def _point(self, manifest: dict[str, Any], job: str) -> None:
        window_end = float(manifest["window"]["end"])
        self.store.point_latest(manifest["version"], event_time=window_end)
        self.notifier.send(manifest)
        self.metrics.publishes.labels(job=job).inc()
        self.metrics.window_end.set(window_end)
        trainer = self.settings.trainer
        removed = self.store.retain(
            trainer.retention_versions, trainer.retention_hours * 3600, now=window_end
        )
        if removed:
            self.say(f"retention: removed {len(removed)} old versions")

    def _record(self, decision: GateDecision, window_start: float) -> None:
        entry = {
            "window": window_folder(window_start),
            "accepted": decision.accepted,
            "reason": decision.reason,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.save_state(last_gate=entry)
        if not decision.accepted:
            self.metrics.refusals.inc()
            log.warning("gate refused window %s: %s", entry["window"], decision.reason)

    # -- offline -----------------------------------------------------------------------------

    def offline(
        self,
        day: str,
        fresh: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        start = _parse_day(day)
        closed = closed_windows(self.settings.samples_root)
        windows = [w for w in closed if start <= w < start + DAY]
        if not windows:
            raise TrainerError(
                f"no closed window on {day} under {self.settings.samples_root} "
                "(are the stream workers running, and has the day's watermark passed?)"
            )
        if len(windows) < DAY / WINDOW_SECONDS:
            self.say(f"{day}: {len(windows)} of 96 windows closed; training on those")
        previous = None if fresh else self._newest(job="offline", before=start + DAY)
        if previous is not None:
            learner, _ = self.load(previous)
            self.say(f"continuing from offline version {previous}")
        else:
            learner = Learner(self.settings)
        train, held = self._split(windows)
        stats = learner.fit(train, "full", progress=progress)
        self.metrics.rate.set(stats.rate)
        metrics = learner.evaluate(held) if held.num_rows else {}
        decision = GateDecision(True, "offline versions are gated when a warm restart serves them")
        manifest = self._write(
            learner,
            kind="offline",
            job="offline",
            window=(start, start + DAY),
            base_version=None,
            samples=train.num_rows,
            metrics=metrics,
            decision=decision,
        )
        self.say(
            f"offline {manifest['version']}: {stats.samples:,d} samples in {stats.seconds:.1f}s "
            f"({stats.rate:,.0f}/s), held-out AUC ctr {metrics.get('auc_ctr', float('nan')):.4f}"
        )
        return manifest

    def _newest(self, job: str, before: float | None = None) -> str | None:
        for version in reversed(self.store.versions()):
            try:
                manifest = self.store.manifest(version)
            except LiverankError:
                continue  # partial or corrupt: never a base
            end = float(manifest["window"]["end"])
            if manifest.get("job") == job and (before is None or end <= before):
                return version
        return None

    # -- warm restart ------------------------------------------------------------------------

    def warm_restart(self, base: str | None = None, force: bool = False) -> dict[str, Any]:
        base = base or self._newest(job="offline")
        if base is None:
            raise TrainerError("no offline version to restart from: run `liverank train offline`")
        learner, base_manifest = self.load(base)
        if base_manifest.get("kind") != "offline":
            raise TrainerError(f"{base} is {base_manifest.get('kind')}, not an offline base")
        latest = self.store.latest()
        admitted = 0
        if latest is not None and latest.version != base:
            serving, _ = self.load(latest.version, copy=False)
            admitted = _admit_from(learner, serving)
        end = float(base_manifest["window"]["end"])
        ttl = self.settings.admission.vocab_ttl_days * DAY
        freed = learner.vocab.evict(end, ttl)
        learner.tables.embedding[freed] = 0.0
        learner.tables.wide[freed] = 0.0
        learner.sparse.reset_rows(freed)
        learner.sparse.refresh_l1(learner.vocab, learner.rules)
        closed = [w for w in closed_windows(self.settings.samples_root) if w < end]
        sets = self.gate_sets(closed[-1], closed) if closed else {}
        decision, metrics = self._judge(learner, sets, gated=not force)
        self._record(decision, closed[-1] if closed else end - WINDOW_SECONDS)
        if not decision.accepted:
            raise TrainerError(f"the gate refused base {base}: {decision.reason} (--force)")
        manifest = self._write(
            learner,
            kind="offline",
            job="warm-restart",
            window=(float(base_manifest["window"]["start"]), end),
            base_version=base,
            samples=int(base_manifest.get("samples", 0)),
            metrics=metrics.get("newest", {}),
            decision=decision,
        )
        self._point(manifest, "warm-restart")
        self.save_state(
            base_version=manifest["version"],
            offline_base=base,
            last_window=end - WINDOW_SECONDS,
            refused=[],
        )
        self.say(
            f"warm restart: {manifest['version']} from {base}; {admitted} IDs admitted from "
            f"the serving model, {len(freed)} evicted (unseen for "
            f"{self.settings.admission.vocab_ttl_days} days); chain reset"
        )
        return manifest

    # -- incremental -------------------------------------------------------------------------

    def adopt_new_base(self) -> dict[str, Any] | None:
        """Warm-restart from the newest offline version when the chain is not on it yet.

        A base the gate refuses is remembered (``refused_bases``) and not tried again; the
        chain goes on from its current base and the operator decides (``--force``).
        """
        state = self.state()
        newest = self._newest(job="offline")
        if newest is None or newest == state.get("offline_base"):
            return None
        if newest in state.get("refused_bases", []):
            return None
        try:
            return self.warm_restart(newest)
        except TrainerError as exc:
            self.say(f"not adopting {newest}: {exc}")
            self.save_state(refused_bases=[*state.get("refused_bases", []), newest])
            return None

    def pending_windows(self) -> list[float]:
        state = self.state()
        if "last_window" not in state:
            raise TrainerError(
                "no incremental chain yet: run `liverank train offline --day D` and "
                "`liverank train warm-restart` first"
            )
        return [w for w in closed_windows(self.settings.samples_root) if w > state["last_window"]]

    def incremental_window(
        self, start: float, pending: Sequence[float] | None = None
    ) -> WindowResult:
        """Build, gate and publish the candidate for the closed window at ``start``.

        ``pending``: every window since the chain's last one up to ``start`` (a trainer that
        fell behind catches up in one version instead of publishing stale ones): ``chained``
        trains on all of them; ``from_base`` trains on all of today's windows anyway.
        """
        began = time.perf_counter()
        state = self.state()
        base = state["base_version"]
        refused = set(state.get("refused", []))
        closed = closed_windows(self.settings.samples_root)
        policy = self.settings.trainer.restart_policy
        if policy == "from_base":
            learner, base_manifest = self.load(base)
            first = max(float(base_manifest["window"]["end"]), day_start(start))
            windows = [w for w in closed if first <= w <= start and w not in refused]
            if day_start(start) > float(base_manifest["window"]["end"]):
                self.say(f"base {base} is older than today: run offline + warm-restart")
        else:
            latest = self.store.latest()
            learner, _ = self.load(latest.version if latest else base)
            windows = list(pending or [start])
        train = self._split(windows)[0]
        stats: FitStats = learner.fit(train, "incremental")
        sets = self.gate_sets(start, closed)
        decision, metrics = self._judge(learner, sets, gated=True)
        self._record(decision, start)
        version = None
        latency = None
        if decision.accepted:
            manifest = self._write(
                learner,
                kind="incremental",
                job="incremental",
                window=(start, start + WINDOW_SECONDS),
                base_version=base,
                samples=train.num_rows,
                metrics=metrics.get("newest", {}),
                decision=decision,
            )
            self._point(manifest, "incremental")
            version = manifest["version"]
            marked = self.marked_at(start)
            latency = time.time() - marked if marked is not None else None
            if latency is not None:
                self.metrics.latency.set(latency)
        else:
            refused.add(start)
        self.metrics.rate.set(stats.rate)
        self.save_state(last_window=start, refused=sorted(refused))
        seconds = time.perf_counter() - began
        outcome = f"→ {version}" if version else f"refused: {decision.reason}"
        caught_up = f", {len(pending)} windows caught up" if pending and len(pending) > 1 else ""
        self.say(
            f"window {window_folder(start)}: {train.num_rows:,d} samples ({policy}{caught_up}), "
            f"{seconds:.1f}s {outcome}"
        )
        return WindowResult(start, version, decision, train.num_rows, seconds, latency)

    def marked_at(self, start: float) -> float | None:
        """When the window's ``_SUCCESS`` was written (wall clock), when the root tells."""
        return self.samples.mtime(self.samples.join(window_folder(start), SUCCESS))

    def incremental(
        self, once: bool = False, stop: Callable[[], bool] | None = None
    ) -> list[WindowResult]:
        """Publish closed windows as they come (``once``: the next one, then return).

        Each round first adopts a newer offline base when ``trainer.auto_restart`` is on (the
        daily restart: the offline job lands a base, the running trainer warm-restarts from
        it), then publishes one version for the newest closed window, catching up on every
        window it had not published yet.
        """
        results: list[WindowResult] = []
        while True:
            if not once and self.settings.trainer.auto_restart:
                self.adopt_new_base()
            pending = self.pending_windows()
            if pending and once:
                return [self.incremental_window(pending[0])]
            if pending:
                results.append(self.incremental_window(pending[-1], pending))
            if once:
                self.say("no closed window after the chain's last one")
                return results
            if stop is not None and stop():
                return results
            time.sleep(self.settings.trainer.poll_interval_seconds)


def _admit_from(learner: Learner, serving: Learner) -> int:
    """Copy the serving model's IDs the base lacks, with their rows and optimizer state."""
    added = learner.vocab.admit_from(serving.vocab)
    learner.tables.ensure(learner.vocab.size)
    learner.sparse.fit_to(learner.tables)
    for _, _, mine, theirs in added:
        learner.tables.embedding[mine] = serving.tables.embedding[theirs]
        learner.tables.wide[mine] = serving.tables.wide[theirs]
        learner.sparse.accumulator[mine] = serving.sparse.accumulator[theirs]
        learner.sparse.z[mine] = serving.sparse.z[theirs]
        learner.sparse.n[mine] = serving.sparse.n[theirs]
    return len(added)


def _parse_day(day: str) -> float:
    try:
        return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise TrainerError(f"--day must be YYYY-MM-DD, got {day!r}") from None
