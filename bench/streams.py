"""Stream-worker throughput on the local Kafka, beside a plain aiokafka consume loop.

Publishes a simulated day to fresh topics, then in one run measures (1) ``raw``: an aiokafka
consumer reading the same user and anchor topics and decoding nothing, and (2) ``full``: one
``liverank streams worker`` doing everything (parse, features, label join, Redis, samples as
Parquet and on Kafka, changelogs), timed from its first processed event to its last. Needs
the local services (``liverank services up``). Run:

    .venv/bin/python bench/streams.py --users 2000 --anchors 500

Last line: ``streams: full=<events/s> raw=<events/s> ratio=<full/raw>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.local.scratch import forget
from liverank.settings import Settings
from streams.events import INPUT_TOPICS
from tests.integration.harness import (
    publish,
    scoped,
    simulated_events,
    start_worker,
    stop,
)


async def raw_rate(settings: Settings, expected: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *[settings.topic(t) for t in INPUT_TOPICS],
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    count, first = 0, None
    try:
        while count < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                if first is None:
                    first = time.perf_counter()
                count += len(records)
    finally:
        await consumer.stop()
    assert first is not None
    return count / (time.perf_counter() - first)


def full_rate(settings: Settings, expected: int) -> float:
    stats = Path(settings.home) / "streams" / "bench.json"
    worker = start_worker(settings, "bench")
    try:
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            time.sleep(0.25)
            try:
                seen = sum(json.loads(stats.read_text())["events_in"].values())
            except (OSError, ValueError, KeyError):
                continue
            now = time.perf_counter()
            if first is None and seen > 0:
                first = (now, seen)
            if seen >= expected and first is not None:
                return (seen - first[1]) / (now - first[0])
        raise RuntimeError("the worker did not finish within 30 minutes")
    finally:
        stop(worker)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--anchors", type=int, default=500)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="liverank-bench-"))
    base = Settings.load(home=Path(__file__).resolve().parents[1] / ".liverank")
    settings = scoped(base, f"bench{uuid.uuid4().hex[:8]}", home, stats_interval_seconds=0.25)
    events = simulated_events(days=args.days, users=args.users, anchors=args.anchors, seed=7)
    try:
        print(f"[bench] publishing {len(events):,d} events", file=sys.stderr, flush=True)
        publish(settings, events)
        raw = asyncio.run(raw_rate(settings, len(events)))
        print(f"[bench] raw aiokafka consume: {raw:,.0f} events/s", file=sys.stderr, flush=True)
        full = full_rate(settings, len(events))
        print(f"[bench] full worker: {full:,.0f} events/s", file=sys.stderr, flush=True)
    finally:
        done = forget(settings, [settings.kafka.topic_prefix])
        print(f"[bench] scratch data: {done.summary()}", file=sys.stderr, flush=True)
    print(f"streams: full={full:.0f} raw={raw:.0f} ratio={full / raw:.3f}")


if __name__ == "__main__":
    main()
