"""``liverank demo``: the whole system on simulated live traffic, then the freshness report.

1. The local services (Kafka, Redis, HBase), fresh topics and tables for this run, the
   simulated world's offline profiles loaded into HBase.
2. Two stream workers (one consumer group), the scorer, and the simulator publishing several
   days of traffic at a set event-time speed (held back when the workers fall behind); the
   scorer serves the simulator's requests, so its snapshots feed the joiner.
3. When a day's last window has landed, the daily offline job trains on it; after the first
   day a warm restart serves the base and the 15-minute incremental trainer starts; later
   bases are adopted by the running trainer (its daily restart).
4. At the end the watermark is advanced past the last events, the last windows land and
   are published, and every process the demo started is stopped.
5. The report (``report/``): the cadence comparison on the landed samples, freshness per
   stage, join rate, throughput and latency, admission and segment AUCs, plots.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from deploy.local.processes import free_port
from deploy.local.scratch import forget
from deploy.local.services import LocalServices, print_progress
from features.hbase import HBaseTables
from features.profiles import HBaseProfileStore, load_profiles
from liverank.demo.fleet import DemoError, Fleet
from liverank.demo.player import Player, PlayStats
from liverank.settings import Settings
from liverank.simulator.run import parse_start, write_profiles
from liverank.simulator.world import WorldConfig, build_world
from snapshots.layout import WINDOW_SECONDS, window_folder, window_start
from snapshots.samples import completed_windows
from snapshots.storage import Root
from streams.control import advance, combine_stats, read_stats
from streams.topics import ensure_topics
from trainer.checkpoints import CheckpointStore, parse_version

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400.0


@dataclass(frozen=True)
class DemoOptions:
    days: float = 3.0
    users: int = 2000
    anchors: int = 500
    seed: int = 7
    start: str = "2026-11-01"
    speed: float = 600.0  # event seconds per wall second
    max_ahead_seconds: float = 3600.0  # event time the publisher may run ahead of the workers
    score_fraction: float = 0.5  # requests the scorer serves
    report: Path = Path("report")
    keep_services: bool = False
    admission: bool = True  # the admission comparison (two more replays)


def say(line: str) -> None:
    print(f"[demo] {line}", file=sys.stderr, flush=True)


@dataclass
class Observed:
    """What the monitor saw, with wall-clock times."""

    windows: dict[str, float] = field(default_factory=dict)  # folder -> _SUCCESS time
    versions: dict[str, float] = field(default_factory=dict)  # version -> first served
    series: list[dict[str, Any]] = field(default_factory=list)  # periodic stream stats
    watermark: float | None = None
    serving: str | None = None


class Monitor(threading.Thread):
    """Polls the workers' stats, the landed windows and the scorer once a second; prints
    progress; tells the trainer driver when a day has fully landed."""

    def __init__(
        self,
        settings: Settings,
        stats: PlayStats,
        scorer: httpx.Client,
        days: int,
        on_day_landed: Callable[[float], None],
        fleet: Fleet,
    ) -> None:
        super().__init__(name="demo-monitor", daemon=True)
        self.fleet = fleet
        self.settings = settings
        self.stats = stats
        self.scorer = scorer
        self.days = days
        self.on_day_landed = on_day_landed
        self.observed = Observed()
        self.samples = Root(settings.samples_root)
        self.days_landed: set[float] = set()
        self.halt = threading.Event()
        self.error: BaseException | None = None
        self.began = time.monotonic()
        self.printed = 0.0

    def run(self) -> None:
        while not self.halt.wait(1.0):
            try:
                self.tick()
            except Exception as exc:
                self.error = exc
                return

    def tick(self) -> None:
        self.fleet.check()
        now = time.time()
        workers = read_stats(self.settings.home)
        total = combine_stats(workers)
        marks = [p["watermark"] for p in total["partitions"].values() if p["watermark"]]
        reported = len(marks) == self.settings.kafka.partitions
        self.observed.watermark = min(marks) if marks and reported else None
        self.observed.series.append(
            {
                "wall": now,
                "published_ts": self.stats.last_ts,
                "watermark": self.observed.watermark,
                "events_in": sum(total["events_in"].values()),
                "clicks": total["clicks"],
                "joined_clicks": total["joined_clicks"],
                "pending": total["pending_samples"],
            }
        )
        for folder in completed_windows(self.settings.samples_root):
            if folder not in self.observed.windows:
                marked = self.samples.mtime(self.samples.join(folder, "_SUCCESS"))
                self.observed.windows[folder] = marked if marked is not None else now
        self._days()
        self._serving(now)
        if time.monotonic() - self.printed >= 5.0:
            self.printed = time.monotonic()
            self._progress(total)

    def _days(self) -> None:
        first = self.stats.first_ts
        if first is None:
            return
        day0 = first - first % DAY
        for number in range(self.days):
            start = day0 + number * DAY
            last = window_folder(start + DAY - WINDOW_SECONDS)
            if start not in self.days_landed and last in self.observed.windows:
                self.days_landed.add(start)
                self.on_day_landed(start)

    def _serving(self, now: float) -> None:
        try:
            answer = self.scorer.get("/v1/model", timeout=2)
        except httpx.HTTPError:
            return
        if answer.status_code == 200:
            version = answer.json()["version"]
            self.observed.serving = version
            self.observed.versions.setdefault(version, now)

    def _progress(self, total: dict[str, Any]) -> None:
        ts = self.stats.last_ts
        if ts is None:
            say("waiting for the first events")
            return
        day0 = (self.stats.first_ts or ts) // DAY * DAY
        day = int((ts - day0) // DAY) + 1
        clock = time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))
        rate = total["join_rate"]
        join = f"{rate:.3f}" if rate is not None else "-"
        serving = self.observed.serving
        if serving is None:
            model = "no model yet"
        else:
            age = (ts - parse_version(serving)[0]) / 60
            model = f"serving {serving} ({age:,.0f} event-min old)"
        elapsed = time.monotonic() - self.began
        say(
            f"day {day}/{self.days} {clock} | published {self.stats.events:,d} events "
            f"({self.stats.events / max(elapsed, 1e-9):,.0f}/s) | landed "
            f"{len(self.observed.windows)} windows | join rate {join} | {model}"
        )


class TrainerDriver(threading.Thread):
    """Runs the daily jobs in order: offline on a landed day; the first time, the warm
    restart and then the long-running incremental trainer."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(name="demo-trainer", daemon=True)
        self.fleet = fleet
        self.days: queue.Queue[float | None] = queue.Queue()
        self.started = False
        self.error: BaseException | None = None
        self.jobs: list[dict[str, Any]] = []

    def day_landed(self, start: float) -> None:
        self.days.put(start)

    def run(self) -> None:
        while (start := self.days.get()) is not None:
            try:
                self._day(start)
            except Exception as exc:
                self.error = exc
                return

    def _day(self, start: float) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime(start))
        say(f"{day} has landed: offline job")
        began = time.monotonic()
        version = self.fleet.run("train-offline", "train", "offline", "--day", day).strip()
        self.jobs.append(
            {"job": "offline", "day": day, "version": version, "seconds": time.monotonic() - began}
        )
        say(f"offline {day} → {version} ({time.monotonic() - began:.0f}s)")
        if not self.started:
            self.fleet.run("train-warm-restart", "train", "warm-restart")
            say("warm restart served the first base; the incremental trainer starts")
            self.fleet.start("trainer", "train", "incremental")
            self.started = True

    def finish(self) -> None:
        self.days.put(None)
        self.join()


def demo_settings(base: Settings, home: Path, run: str) -> Settings:
    """The demo's settings: its own topics, tables, folders and ports; quick polling."""
    return base.model_copy(
        update={
            "home": home,
            "samples_root": str(home / "samples"),
            "checkpoint_root": str(home / "checkpoints"),
            "kafka": base.kafka.model_copy(update={"topic_prefix": run}),
            "hbase": base.hbase.model_copy(update={"table_prefix": run}),
            "streams": base.streams.model_copy(
                update={"stats_interval_seconds": 1.0, "metrics_port": 0}
            ),
            # At hundreds of times real speed, from_base's retraining of the day so far takes
            # longer than a window lasts in wall time; chained updates keep up.
            "trainer": base.trainer.model_copy(
                update={
                    "poll_interval_seconds": 1.0,
                    "metrics_port": 0,
                    "restart_policy": "chained",
                }
            ),
            "scorer": base.scorer.model_copy(
                update={"port": free_port(), "poll_interval_seconds": 1.0}
            ),
        }
    )


def _forget_previous_run(base: Settings, home: Path) -> None:
    """Delete the topics and tables of the previous demo run (its folders go with ``home``)."""
    record = home / "run.json"
    if not record.exists():
        return
    try:
        previous = json.loads(record.read_text())["run"]
    except (OSError, ValueError, KeyError) as exc:
        say(f"could not read the previous run's name from {record}: {exc}")
        return
    done = forget(base, [previous])
    say(f"previous run {previous}: {done.summary()}")


def run_demo(base: Settings, options: DemoOptions) -> Path:
    """Run the demo; return the report's markdown path. Stops what it started."""
    began = time.monotonic()
    services = LocalServices(base, progress=print_progress)
    timings = services.up()
    try:
        return _run(base, options, timings, began)
    finally:
        if not options.keep_services:
            say("stopping the local services")
            services.down()


def _run(base: Settings, options: DemoOptions, timings: dict[str, float], began: float) -> Path:
    home = (base.home / "demo").resolve()
    _forget_previous_run(base, home)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    run = f"demo{int(time.time())}"
    (home / "run.json").write_text(json.dumps({"run": run}) + "\n")
    settings = demo_settings(base, home, run)
    ensure_topics(settings)
    say(f"run {run}: topics, tables and folders under {home}")

    config = WorldConfig(
        days=options.days,
        users=options.users,
        anchors=options.anchors,
        seed=options.seed,
        start_ts=parse_start(options.start),
    )
    world = build_world(config)
    write_profiles(world, home / "profiles")
    tables = HBaseTables(
        settings.hbase.thrift_host,
        settings.hbase.thrift_port,
        settings.hbase.table_prefix,
        settings.hbase.timeout_ms,
    )
    try:
        load_profiles(HBaseProfileStore(tables), home / "profiles", progress=say)
    finally:
        tables.close()

    env = {**os.environ, **settings.as_environment()}
    env.pop("LIVERANK_CONFIG", None)
    fleet = Fleet(env, home / "logs", ROOT)
    scorer_url = f"http://{settings.scorer.host}:{settings.scorer.port}"
    client = httpx.Client(base_url=scorer_url, timeout=10)
    driver = TrainerDriver(fleet)
    try:
        fleet.start("scorer", "serve")
        for name in ("worker-1", "worker-2"):
            fleet.start(name, "streams", "worker", "--name", name, "--loglevel", "warning")
        _wait(lambda: _listening(client), 90, "the scorer to listen", fleet)
        player = Player(
            settings,
            world,
            options.seed,
            speed=options.speed,
            max_ahead_seconds=options.max_ahead_seconds,
            watermark=lambda: monitor.observed.watermark,
            scorer_url=scorer_url,
            score_fraction=options.score_fraction,
            stop=lambda: monitor.error is not None or driver.error is not None,
        )
        monitor = Monitor(settings, player.stats, client, world.day_count, driver.day_landed, fleet)
        monitor.start()
        driver.start()
        play_began = time.time()
        say(
            f"publishing {options.days:g} simulated days at {options.speed:g}x event time "
            f"({world.day_count} days, {options.users} users, {options.anchors} anchors)"
        )
        stats = player.play(player.days(), on_day=lambda d: say(f"generating day {d + 1}"))
        player.close()
        _raise_failures(fleet, monitor, driver)
        play_ended = time.time()
        last = stats.last_ts or 0.0
        rules = settings.labels
        to = last + rules.conversion_window + rules.allowed_lateness + WINDOW_SECONDS
        advance(settings, to)
        say("published everything; watermark advanced past the last events")
        closed_at = time.time()
        last_window = window_folder(window_start(last))
        _wait(lambda: last_window in monitor.observed.windows, 300, "the last window", fleet)
        driver.finish()
        _raise_failures(fleet, monitor, driver)
        store = CheckpointStore(settings.checkpoint_root)
        _wait(
            lambda: _trained_through(store, window_start(last)),
            600,
            "the trainer to publish the last window",
            fleet,
        )
        _wait(
            lambda: monitor.observed.serving == _latest(store), 60, "the scorer to serve it", fleet
        )
        time.sleep(1.5)  # one more monitor tick
        scorer_metrics = client.get("/metrics").text
    finally:
        client.close()
        with contextlib.suppress(NameError):
            monitor.halt.set()
        fleet.stop_all()
    say(f"live run done in {time.monotonic() - began:.0f}s; every demo process stopped")

    from liverank.demo.report import LiveRun, write_report

    live = LiveRun(
        settings=settings,
        options=options,
        services_up_seconds=timings,
        stats=stats,
        observed=monitor.observed,
        history=store.history(),
        trainer_state=store.trainer_state(),
        trainer_log=fleet.log("trainer").read_text(errors="replace"),
        offline_jobs=driver.jobs,
        worker_stats=combine_stats(read_stats(settings.home)),
        scorer_metrics=scorer_metrics,
        play_wall=(play_began, play_ended),
        advanced_at=closed_at,
        live_seconds=time.monotonic() - began,
    )
    return write_report(live, fleet)


def _listening(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def _wait(condition: Callable[[], bool], timeout: float, what: str, fleet: Fleet) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fleet.check()
        if condition():
            return
        time.sleep(0.5)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}; logs: {fleet.logs}")


def _raise_failures(fleet: Fleet, monitor: Monitor, driver: TrainerDriver) -> None:
    fleet.check()
    for part in (monitor, driver):
        if part.error is not None:
            raise DemoError(f"{part.name} failed: {part.error}") from part.error


def _latest(store: CheckpointStore) -> str | None:
    latest = store.latest()
    return latest.version if latest else None


def _trained_through(store: CheckpointStore, start: float) -> bool:
    return float(store.trainer_state().get("last_window", 0.0)) >= start
