"""What landing samples costs a live stream worker: window files rewritten after every batch
(the baseline, what the workers did before) against every ``--every`` seconds of event time
(``streams.landing_interval_seconds``), in the same run.

Simulated traffic goes through the worker's own batch logic (``UserSide``, ``SampleLander``,
``land_batch``; no Kafka, no Redis, files on local disk) in small batches of what was just
sent, each followed by a tick, so the watermark moves on with every batch as on a busy
partition. Only the landing step is timed (adding the samples, the files, the markers); the
runs alternate, and the figures are medians.

    .venv/bin/python bench/landing.py [--users 10000] [--hours 2] [--batch 50] [--every 300]

Last line: ``landing: baseline_s=<s> interval_s=<s> ratio=<baseline/interval>
files_baseline=<n> files_interval=<n> rows_baseline=<n> rows_interval=<n>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liverank.simulator.run import parse_start
from liverank.simulator.traffic import TrafficGenerator
from liverank.simulator.world import WorldConfig, build_world
from snapshots.samples import SampleLander
from streams.events import encode_document
from streams.join import LabelRules
from streams.pipeline import USER_SOURCES, Lookups, Message, UserSide, land_batch, tick_message

NO_LOOKUPS = Lookups(snapshots={}, anchors={}, user_profiles={}, anchor_profiles={})


def traffic(users: int, hours: float, partitions: int) -> list[tuple[float, Message]]:
    """The evening's user-keyed events as messages, in event-time order, with their ts."""
    start = parse_start("2026-11-04") + 16 * 3600
    config = WorldConfig(
        days=hours / 24, users=users, anchors=max(50, users // 20), seed=5, start_ts=start
    )
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for day in TrafficGenerator(build_world(config), seed=config.seed).days():
        for ts, _, topic, key, document in day.events:
            if topic == "anchor-status":
                continue
            partition = zlib.crc32(key.encode()) % partitions
            offset = offsets.get((topic, partition), 0)
            offsets[(topic, partition)] = offset + 1
            out.append(
                (ts, Message(topic, partition, offset, key.encode(), encode_document(document)))
            )
    return out


def ticks(ts: float, sent: dict[tuple[str, int], int], partitions: int) -> list[Message]:
    """Per partition: the watermark may move to ``ts`` once ``sent`` was read."""
    return [
        tick_message(p, ts, {t: sent.get((t, p), 0) for t in USER_SOURCES})
        for p in range(partitions)
    ]


def run(
    messages: list[tuple[float, Message]], batch: int, every: float, partitions: int
) -> tuple[float, SampleLander]:
    """Seconds spent landing, and the lander (its counts)."""
    rules = LabelRules()
    side = UserSide(rules, {"join": {}, "users": {}, "user_anchor": {}}, topic_of=str)
    with tempfile.TemporaryDirectory(prefix="liverank-landing-") as root:
        lander = SampleLander(root, partitions, rules.click_window, rules.horizon)
        sent: dict[tuple[str, int], int] = {}
        spent = 0.0
        for start in range(0, len(messages), batch):
            chunk = [m for _, m in messages[start : start + batch]]
            sent.update({(m.topic, m.partition): m.offset + 1 for m in chunk})
            now = messages[min(start + batch, len(messages)) - 1][0]
            chunk += ticks(now - rules.allowed_lateness, sent, partitions)
            out = side.process(chunk, NO_LOOKUPS, lambda t, p: sent.get((t, p), 0))
            began = time.perf_counter()
            land_batch(lander, out, every)
            spent += time.perf_counter() - began
            side.commit()
        end = ticks(messages[-1][0] + rules.horizon + 1800, sent, partitions)
        out = side.process(end, NO_LOOKUPS)
        began = time.perf_counter()
        land_batch(lander, out, every)
        spent += time.perf_counter() - began
    return spent, lander


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=50, help="events a batch")
    parser.add_argument("--every", type=float, default=300.0, help="event-time seconds")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    messages = traffic(args.users, args.hours, args.partitions)
    print(
        f"[bench] {len(messages):,d} events in batches of {args.batch}, "
        f"{args.partitions} partitions",
        file=sys.stderr,
        flush=True,
    )
    times: dict[float, list[float]] = {0.0: [], args.every: []}
    landers: dict[float, SampleLander] = {}
    for repeat in range(args.repeats):
        for every in times:
            spent, landers[every] = run(messages, args.batch, every, args.partitions)
            times[every].append(spent)
            files = landers[every].files_written
            print(
                f"[bench] run {repeat + 1}, every={every:g}s: landing {spent:.2f} s, "
                f"{files:,d} files written",
                file=sys.stderr,
                flush=True,
            )
    baseline, interval = (statistics.median(times[e]) for e in times)
    each, timed = landers[0.0], landers[args.every]
    print(
        f"landing: baseline_s={baseline:.2f} interval_s={interval:.2f} "
        f"ratio={baseline / interval:.1f} files_baseline={each.files_written} "
        f"files_interval={timed.files_written} rows_baseline={each.rows_written} "
        f"rows_interval={timed.rows_written}"
    )


if __name__ == "__main__":
    main()
