"""Scorer latency under a fixed request rate, against a running ``liverank serve``.

Publishes a trained checkpoint to a scratch checkpoint root, writes real-time features for
every user and anchor to the local Redis, starts ``liverank serve`` on a free port, then sends
``--rate`` requests per second (open loop: a request leaves on schedule whether or not the
previous ones came back) of ``--candidates`` anchors each for ``--seconds``, and measures each
answer's latency at the client. Before that, in its own process, it times the service's steps
for real requests one by one (a ``stages:`` line: Redis, the whole fetch, encoding, the bare
forward pass, the snapshot cell); the last line's ``forward_ms`` is that forward pass. Needs
the local services (``liverank services up``).

    .venv/bin/python bench/scorer.py [--rate 200] [--candidates 200] [--seconds 20] [--workers 1]

Last line: ``scorer: p50_ms=<x> p99_ms=<y> forward_ms=<z> rps=<r> errors=<n>``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import httpx
import numpy as np

from deploy.local.processes import free_port
from deploy.local.scratch import forget
from features.hbase import HBaseTables
from features.profiles import CachedProfiles, HBaseProfileStore
from features.store import FeatureWrite, RedisFeatureStore
from liverank.settings import Settings
from scorer.fetch import FeatureFetcher
from snapshots.store import encode_snapshot
from tests.unit.test_learner import synthetic
from tests.unit.test_scorer import publish
from trainer.checkpoints import CheckpointStore
from trainer.encode import RequestColumns
from trainer.learner import Learner


async def fill_redis(settings: Settings, users: int, anchors: int) -> None:
    store = RedisFeatureStore.from_url(settings.redis.url, settings.kafka.topic_prefix, 3600)
    rng = np.random.default_rng(1)
    await store.write(
        FeatureWrite(
            users={
                f"u{i}": {
                    "u_ctr_decayed": float(rng.random()),
                    # a full recent list: the interest module's work for a regular user
                    "u_recent_anchors": ",".join(f"a{j}" for j in rng.integers(0, anchors, 50)),
                }
                for i in range(users)
            },
            anchors={
                f"a{i}": {"a_viewers": float(rng.integers(0, 5000)), "a_live": 1.0}
                for i in range(anchors)
            },
            user_anchor={
                (f"u{i}", f"a{j}"): {"ua_clicks_7d": 1.0}
                for i in range(users)
                for j in rng.integers(0, anchors, 20)
            },
        )
    )
    await store.close()


async def load(
    port: int, rate: float, seconds: float, candidates: int, anchors: int
) -> tuple[list[float], int, float]:
    """Send the requests on schedule; each answer's latency in ms, the errors, the rate sent.

    The client is aiohttp: it shares the two cores with the service, and costs it less CPU
    per request than httpx (which cost the service about a fifth of its rate here)."""
    rng = np.random.default_rng(2)
    latencies: list[float] = []
    errors = 0
    url = f"http://127.0.0.1:{port}/v1/rank"
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(number: int) -> None:
            nonlocal errors
            picked = rng.choice(anchors, candidates, replace=False)
            body = {
                "request_id": f"bench-{number}",
                "user_id": f"u{number % 500}",
                "candidates": [f"a{i}" for i in picked],
            }
            began = time.perf_counter()
            try:
                async with session.post(url, json=body) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        return
            except (TimeoutError, aiohttp.ClientError):
                errors += 1
                return
            latencies.append((time.perf_counter() - began) * 1000)

        for warm in range(20):
            await one(-warm - 1)
        latencies.clear()
        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for number in range(total):
            delay = start + number / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(number)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return latencies, errors, total / elapsed


async def stages(
    settings: Settings, learner: Learner, candidates: int, anchors: int, requests: int = 250
) -> dict[str, list[float]]:
    """The service's steps for one request, timed one by one in this process against the
    same Redis and HBase (ms; the first 50 requests warm up): the Redis round trip alone,
    the whole fetch (that round trip again, profiles, the rows), encoding, the forward pass,
    and laying out the snapshot cell (the writer thread's work)."""
    hbase = settings.hbase
    tables = HBaseTables(hbase.thrift_host, hbase.thrift_port, hbase.table_prefix)
    profiles = CachedProfiles(HBaseProfileStore(tables), hbase.profile_cache_seconds)
    store = RedisFeatureStore.from_url(settings.redis.url, settings.kafka.topic_prefix, 3600)
    fetcher = FeatureFetcher(store, profiles)
    rng = np.random.default_rng(3)
    steps: dict[str, list[float]] = {
        k: [] for k in ("redis", "fetch", "encode", "forward", "snapshot_cell")
    }
    for number in range(requests):
        ids = [f"a{i}" for i in rng.choice(anchors, candidates, replace=False)]
        user = f"u{number % 500}"
        marks = [time.perf_counter()]
        await store.read(user, ids)
        marks.append(time.perf_counter())
        fetched = await fetcher.fetch(user, ids, "home")
        marks.append(time.perf_counter())
        batch = learner.encoder.encode(RequestColumns(fetched.rows))
        marks.append(time.perf_counter())
        learner.predict_batch(batch)
        marks.append(time.perf_counter())
        encode_snapshot(fetched.rows)
        marks.append(time.perf_counter())
        if number >= 50:
            for name, began, ended in zip(steps, marks[:-1], marks[1:], strict=True):
                steps[name].append((ended - began) * 1000)
    await store.close()
    tables.close()
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--anchors", type=int, default=1000)
    parser.add_argument(
        "--workers", type=int, default=1, help="the service's processes (scorer.workers)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        prefix = f"benchscorer{os.getpid()}"  # its own snapshot table, deleted at the end
        settings = Settings(
            checkpoint_root=scratch,
            kafka={"topic_prefix": prefix},  # type: ignore[arg-type]
            hbase={"table_prefix": prefix},  # type: ignore[arg-type]
        )
        learner = Learner(settings)
        learner.fit(synthetic(20000, 1), "incremental")
        publish(CheckpointStore(scratch), learner, 0)
        asyncio.run(fill_redis(settings, 500, args.anchors))

        steps = asyncio.run(stages(settings, learner, args.candidates, args.anchors))
        print(
            "stages: " + " ".join(f"{k}_ms={statistics.median(v):.2f}" for k, v in steps.items()),
            flush=True,
        )
        forward = steps["forward"]

        port = free_port()
        env = dict(os.environ)
        env.update(
            LIVERANK_CHECKPOINT_ROOT=scratch,
            LIVERANK_KAFKA__TOPIC_PREFIX=settings.kafka.topic_prefix,
            LIVERANK_HBASE__TABLE_PREFIX=settings.hbase.table_prefix,
            LIVERANK_SCORER__PORT=str(port),
            LIVERANK_SCORER__WORKERS=str(args.workers),
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "liverank.cli", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            else:
                sys.exit("the scorer did not come up")
            latencies, errors, rps = asyncio.run(
                load(port, args.rate, args.seconds, args.candidates, args.anchors)
            )
        finally:
            server.terminate()
            server.wait(timeout=20)
            print(f"[bench] scratch data: {forget(settings, [prefix]).summary()}", flush=True)
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) if ordered else float("nan")
    p99 = ordered[int(0.99 * (len(ordered) - 1))] if ordered else float("nan")
    print(
        f"scorer: p50_ms={p50:.2f} p99_ms={p99:.2f} forward_ms={statistics.median(forward):.2f} "
        f"rps={rps:.1f} errors={errors}"
    )


if __name__ == "__main__":
    main()
