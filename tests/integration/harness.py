"""Helpers for end-to-end stream tests: publish events, run real workers, read what landed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from liverank.settings import Settings
from liverank.simulator.run import parse_start
from liverank.simulator.traffic import TrafficGenerator
from liverank.simulator.world import WorldConfig, build_world
from snapshots.layout import window_folder, window_start
from snapshots.samples import completed_windows, read_completed
from streams.events import Event, Invalid, encode_document, parse_event
from streams.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]
Published = tuple[str, str, bytes]  # topic (no prefix), key, value
# The topic and table prefixes given out in this test session; conftest deletes their topics
# and tables when the session ends (LIVERANK_TEST_KEEP_DATA=1 keeps them to look at).
SCOPED: set[str] = set()


def simulated_events(
    days: float = 1.0, users: int = 120, anchors: int = 40, seed: int = 31
) -> list[Published]:
    """A small simulated day, time-ordered across topics."""
    config = WorldConfig(
        days=days, users=users, anchors=anchors, seed=seed, start_ts=parse_start("2026-11-05")
    )
    out: list[Published] = []
    for day in TrafficGenerator(build_world(config), seed=config.seed).days():
        out.extend((topic, key, encode_document(doc)) for _, _, topic, key, doc in day.events)
    return out


def last_ts(published: list[Published]) -> float:
    """The newest event time of the valid messages."""
    return max(event.ts for event in parsed(published))


def parsed(published: list[Published]) -> list[Event]:
    events = []
    for topic, _, value in published:
        event = parse_event(topic, value)
        if not isinstance(event, Invalid):
            events.append(event)
    return events


def perturbed(published: list[Published], lateness: float, seed: int) -> list[Published]:
    """Shuffled within the allowed lateness, 5% duplicated, many clicks before impressions.

    Every message arrives between its event time and event time + lateness, which is what
    "within the allowed lateness" means; an impression whose click came soon after it is held
    back to the end of that span, so the click arrives first.
    """
    rng = random.Random(seed)
    documents = [json.loads(value) for _, _, value in published]
    click_ts = {
        (d["request_id"], d["anchor_id"]): d["ts"]
        for (topic, _, _), d in zip(published, documents, strict=True)
        if topic == "clicks"
    }
    keyed = []
    for index, ((topic, key, value), document) in enumerate(zip(published, documents, strict=True)):
        ts = document["ts"]
        arrival = ts + rng.uniform(0, lateness)
        if topic == "impressions":
            clicked = click_ts.get((document["request_id"], document["anchor_id"]))
            if clicked is not None and clicked - ts < lateness / 2 and rng.random() < 0.7:
                arrival = ts + lateness * 0.95
        elif topic == "clicks":
            arrival = ts + rng.uniform(0, lateness * 0.05)
        keyed.append((arrival, index, (topic, key, value)))
        if rng.random() < 0.05:
            keyed.append((ts + rng.uniform(0, lateness), index, (topic, key, value)))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [item[2] for item in keyed]


def malformed(partitions: int) -> list[Published]:
    """Bad messages for every input topic, each a different way of being wrong."""
    bad = [
        ("impressions", "u-bad", b"{not json"),
        (
            "clicks",
            "u-bad",
            b'{"event_id":"x1","ts":"yesterday","request_id":"r","user_id":"u","anchor_id":"a"}',
        ),
        (
            "watch",
            "u-bad",
            b'{"event_id":"x2","ts":1,"request_id":"r","user_id":"u","anchor_id":"a","seconds":-5,"screen_on":true}',
        ),
        (
            "actions",
            "u-bad",
            b'{"event_id":"x3","ts":NaN,"request_id":"r","user_id":"u","anchor_id":"a","action":"gift"}',
        ),
        ("anchor-status", "a-bad", b"[1,2,3]"),
        ("impressions", "u-bad", b"\xff\xfe"),
    ]
    return bad


def publish(settings: Settings, messages: list[Published], partition: int | None = None) -> None:
    """Send ``messages`` keyed as they are, to ``partition`` if given (else by key)."""
    producer = KafkaProducer(acks="all", linger_ms=20, **settings.kafka.client_options())
    for topic, key, value in messages:
        producer.send(settings.topic(topic), key=key.encode(), value=value, partition=partition)
    producer.flush()
    producer.close()


def scoped(settings: Settings, name: str, home: Path, **streams: Any) -> Settings:
    """``settings`` with topics and tables of their own (prefix ``name``), files in ``home``."""
    SCOPED.add(name)
    kafka = settings.kafka.model_copy(update={"topic_prefix": name})
    hbase = settings.hbase.model_copy(update={"table_prefix": name})
    update: dict[str, Any] = {
        "kafka": kafka,
        "hbase": hbase,
        "home": home,
        "samples_root": str(home / "samples"),
    }
    if streams:
        update["streams"] = settings.streams.model_copy(update=streams)
    scoped_settings = settings.model_copy(update=update)
    ensure_topics(scoped_settings)
    return scoped_settings


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LIVERANK_KAFKA__TOPIC_PREFIX=settings.kafka.topic_prefix,
        LIVERANK_HBASE__TABLE_PREFIX=settings.hbase.table_prefix,
        LIVERANK_HOME=str(settings.home),
        LIVERANK_SAMPLES_ROOT=settings.samples_root,
        LIVERANK_STREAMS__BATCH_SECONDS=str(settings.streams.batch_seconds),
        LIVERANK_STREAMS__STATS_INTERVAL_SECONDS="1",
        LIVERANK_STREAMS__COMMIT_INTERVAL_SECONDS=str(settings.streams.commit_interval_seconds),
        LIVERANK_STREAMS__LANDING_INTERVAL_SECONDS=str(settings.streams.landing_interval_seconds),
    )
    return env


def start_worker(settings: Settings, name: str) -> subprocess.Popen[bytes]:
    log = (Path(settings.home) / f"{name}.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "liverank.cli",
            "streams",
            "worker",
            "--name",
            name,
            "--loglevel",
            os.environ.get("LIVERANK_TEST_LOGLEVEL", "warning"),
        ],
        cwd=ROOT,
        env=worker_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_for_last_window(
    settings: Settings, last_ts: float, timeout: float, workers: Sequence[str] = ("w0",)
) -> None:
    """Wait until the window holding ``last_ts`` has its ``_SUCCESS``; on a timeout the
    failure carries what the workers logged and their stats (watermarks, pending, offsets)."""
    wanted = window_folder(window_start(last_ts))
    try:
        wait_for(
            lambda: wanted in completed_windows(settings.samples_root),
            timeout,
            f"the last window's _SUCCESS ({wanted})",
        )
    except AssertionError as exc:
        evidence = [str(exc)]
        for name in workers:
            evidence.append(f"--- worker {name} log (tail) ---\n{worker_log(settings, name)}")
            stats = Path(settings.home) / "streams" / f"{name}.json"
            if stats.exists():
                evidence.append(f"--- worker {name} stats ---\n{stats.read_text()[-4000:]}")
        raise AssertionError("\n".join(evidence)) from None


def landed_labels(settings: Settings) -> dict[str, tuple[int, int]]:
    rows = read_completed(settings.samples_root, ["sample_id", "click", "conversion"])
    return {row["sample_id"]: (row["click"], row["conversion"]) for row in rows.to_pylist()}


def worker_log(settings: Settings, name: str) -> str:
    path = Path(settings.home) / f"{name}.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""
