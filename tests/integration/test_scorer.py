"""The scorer against the real Redis, HBase and Kafka: pick-up, ranking, snapshots that the
joiner then trains on."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.local.processes import free_port
from deploy.local.services import LocalServices
from features.hbase import HBaseTables
from features.store import FeatureWrite, RedisFeatureStore
from liverank.settings import Settings
from snapshots.layout import window_start
from snapshots.samples import read_window
from snapshots.store import HBaseSnapshotStore
from streams.control import advance
from tests.integration.harness import (
    Published,
    publish,
    scoped,
    start_worker,
    stop,
    wait_for,
    worker_env,
)
from tests.unit.test_learner import synthetic
from tests.unit.test_scorer import publish as publish_learner
from trainer.checkpoints import CheckpointStore
from trainer.encode import rows_table
from trainer.learner import Learner

pytestmark = pytest.mark.integration
TOKEN = "integration-token"
POLL = 1.0


def publish_version(settings: Settings, learner: Learner, index: int) -> str:
    return publish_learner(CheckpointStore(settings.checkpoint_root), learner, index)


def wait_until_serving(client: Any, version: str, what: str) -> None:
    wait_for(
        lambda: client.get("/healthz").json()["model_version"] == version,
        POLL + 10,
        what,
        poll=0.1,
    )


def start_scorer(settings: Settings, port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    env = worker_env(settings)
    env.update(
        LIVERANK_SCORER__WORKERS=str(workers),
        LIVERANK_CHECKPOINT_ROOT=settings.checkpoint_root,
        LIVERANK_SCORER__PORT=str(port),
        LIVERANK_SCORER__ADMIN_TOKEN=TOKEN,
        LIVERANK_SCORER__POLL_INTERVAL_SECONDS=str(POLL),
    )
    log = (Path(settings.home) / "scorer.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "liverank.cli", "serve"],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,  # ``stop`` signals the process group
    )


@pytest.fixture
def scorer_world(
    tmp_path: Path, request: pytest.FixtureRequest, services: LocalServices, unique: str
) -> Any:
    """A ``liverank serve`` process (``request.param`` worker processes, 1 unless a test
    parametrizes the fixture) and a client of it."""
    base = Settings(checkpoint_root=str(tmp_path / "checkpoints"), trainer={"seed": 3})  # type: ignore[arg-type]
    settings = scoped(base, f"scorer{unique}", tmp_path)
    port = free_port()
    process = start_scorer(settings, port, getattr(request, "param", 1))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def up() -> bool:
        try:
            return client.get("/healthz").status_code in (200, 503)
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, "the scorer to listen", poll=0.2)
        yield settings, client
    finally:
        client.close()
        stop(process)
        assert process.poll() is not None, "the scorer outlived its test"


def test_pickup_rank_snapshot_and_the_joiner_trains_on_it(scorer_world: Any) -> None:
    settings, client = scorer_world
    assert client.get("/healthz").status_code == 503  # nothing published yet
    learner = Learner(settings)
    learner.fit(synthetic(4000, 1), "incremental")
    published_at = time.monotonic()
    version = publish_version(settings, learner, 1)
    wait_until_serving(client, version, "the scorer to load the version")
    picked_up = time.monotonic() - published_at
    assert picked_up <= POLL + 5

    async def features() -> None:
        store = RedisFeatureStore.from_url(settings.redis.url, settings.kafka.topic_prefix, 3600)
        await store.write(
            FeatureWrite(
                users={"u1": {"u_ctr_decayed": 0.3}},
                anchors={"a1": {"a_viewers": 42.0, "a_live": 1.0, "a_status": "singing"}},
            )
        )
        await store.close()

    asyncio.run(features())
    request = {"request_id": "req-int-1", "user_id": "u1", "candidates": ["a1", "a2", "a3"]}
    answer = client.post("/v1/rank", json=request)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == version and body["degraded"] is False

    hbase = HBaseTables(
        settings.hbase.thrift_host, settings.hbase.thrift_port, settings.hbase.table_prefix
    )
    snapshots = HBaseSnapshotStore(hbase, 3600)
    wait_for(lambda: "req-int-1" in snapshots.get(["req-int-1"]), 20, "the snapshot", poll=0.2)
    snapshot = snapshots.get(["req-int-1"])["req-int-1"]
    assert set(snapshot) == {"a1", "a2", "a3"}
    assert snapshot["a1"]["a_viewers"] == 42.0 and snapshot["a1"]["a_status"] == "singing"
    assert snapshot["a2"]["u_ctr_decayed"] == 0.3
    # The snapshot is exactly what the model scored: scoring it again gives the answer's scores.
    names = list(learner.config.single_fields + learner.config.sequence_fields)
    rows = [{**snapshot[a], "user_id": "u1", "anchor_id": a} for a in request["candidates"]]
    _, _, p_ctcvr = learner.predict(rows_table(rows, names))
    answered = {item["anchor_id"]: item["p_ctcvr"] for item in body["items"]}
    for anchor_id, value in zip(request["candidates"], p_ctcvr, strict=True):
        assert answered[anchor_id] == pytest.approx(float(value), rel=1e-5)

    # The joiner puts that snapshot into the request's samples.
    worker = start_worker(settings, "worker-scorer")
    try:
        ts = 1793520000.0
        impression = {
            "event_id": "imp-int-1",
            "ts": ts,
            "request_id": "req-int-1",
            "user_id": "u1",
            "anchor_id": "a1",
            "scene": "home",
            "position": 2,
        }
        message: Published = ("impressions", "u1", json.dumps(impression).encode())
        publish(settings, [message])

        def landed() -> bool:
            advance(settings, ts + 3 * 3600)
            table = read_window(settings.samples_root, window_start(ts))
            return table.num_rows > 0

        wait_for(landed, 90, "the sample to land", poll=3)
        sample = read_window(settings.samples_root, window_start(ts)).to_pylist()[0]
        assert sample["request_id"] == "req-int-1"
        assert sample["a_viewers"] == 42.0 and sample["a_status"] == "singing"
        assert sample["c_position"] == 2.0  # the slot shown, not the scorer's 0
        for name, value in snapshot["a1"].items():
            if name != "c_position":
                assert sample[name] == value, name
    finally:
        stop(worker)


class Load:
    """Rank requests from two threads until stopped; every answer's status and version."""

    def __init__(self, client: httpx.Client) -> None:
        self.base_url = str(client.base_url)
        self.answers: list[tuple[int, str | None, bool]] = []  # (status, version, degraded)
        self.errors: list[str] = []
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(2)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run(self, number: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            sequence = 0
            while not self.halt.is_set():
                sequence += 1
                body = {
                    "request_id": f"load-{number}-{sequence}",
                    "user_id": f"u{sequence % 7}",
                    "candidates": [f"a{(sequence + k) % 40}" for k in range(20)],
                }
                try:
                    answer = client.post("/v1/rank", json=body)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                data = answer.json() if answer.status_code == 200 else {}
                self.answers.append(
                    (answer.status_code, data.get("model_version"), bool(data.get("degraded")))
                )

    def count(self) -> int:
        return len(self.answers)


@pytest.mark.parametrize("scorer_world", [1, 2], indirect=True, ids=["1-worker", "2-workers"])
def test_hot_swap_under_load_fails_no_request(scorer_world: Any) -> None:
    settings, client = scorer_world
    learner = Learner(settings)
    learner.fit(synthetic(3000, 1), "incremental")
    published = [publish_version(settings, learner, 1)]
    wait_until_serving(client, published[0], "the first version")
    time.sleep(2 * POLL)  # one process answered: each of the others polls LATEST within POLL
    with Load(client) as load:
        for index in (2, 3, 4):
            wait_for(lambda n=20 * index: load.count() > n, 30, "requests under load", poll=0.05)
            learner.fit(synthetic(1000, index), "incremental")
            published.append(publish_version(settings, learner, index))
            wait_until_serving(client, published[-1], "the new version")
        before = load.count()
        wait_for(lambda: load.count() > before + 20, 30, "requests on the last version")
    assert load.errors == []
    statuses = {status for status, _, _ in load.answers}
    assert statuses == {200}, statuses
    versions = {version for _, version, _ in load.answers}
    assert versions <= set(published)  # every answer names a version that was in LATEST
    assert published[-1] in versions and len(versions) >= 3, versions


def test_redis_stopped_mid_load_degrades_and_recovers_without_a_restart(
    scorer_world: Any, services: LocalServices
) -> None:
    settings, client = scorer_world
    learner = Learner(settings)
    learner.fit(synthetic(3000, 1), "incremental")
    version = publish_version(settings, learner, 1)
    wait_until_serving(client, version, "the version")
    with Load(client) as load:
        wait_for(lambda: load.count() > 20, 30, "requests under load", poll=0.05)
        services.down(["redis"])
        try:
            stopped_at = load.count()
            wait_for(
                lambda: any(d for _, _, d in load.answers[stopped_at:]),
                30,
                "degraded answers",
                poll=0.1,
            )
        finally:
            services.up(["redis"])
        restarted_at = load.count()
        wait_for(
            lambda: any(not d for _, _, d in load.answers[restarted_at + 5 :]),
            60,
            "normal answers after Redis is back",
            poll=0.2,
        )
    assert load.errors == []
    assert {status for status, _, _ in load.answers} == {200}  # degraded, never a 5xx
    assert any(d for _, _, d in load.answers[stopped_at:restarted_at])
    assert not load.answers[-1][2]
    metrics = client.get("/metrics").text
    assert 'liverank_scorer_degraded_total{store="redis"}' in metrics
