"""The scorer service with in-memory twins of its stores and a real checkpoint store on disk."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from features.profiles import CachedProfiles, MemoryProfileStore
from features.store import FeatureWrite, MemoryFeatureStore
from liverank.settings import Settings
from scorer.fetch import FeatureFetcher
from scorer.models import ModelHolder, freeze_heap
from scorer.run import build_app
from scorer.service import create_app
from scorer.snapshots import SnapshotWriter
from snapshots.store import MemorySnapshotStore
from tests.unit.test_learner import synthetic
from trainer.checkpoints import CheckpointStore, version_name
from trainer.encode import rows_table
from trainer.learner import Learner
from trainer.serialize import learner_files

TOKEN = "s3cret"


class FailingStore(MemoryFeatureStore):
    down = False

    async def read(self, user_id: str, anchor_ids: Any) -> Any:
        if self.down:
            raise ConnectionError("redis is down")
        return await super().read(user_id, anchor_ids)


def publish(store: CheckpointStore, learner: Learner, index: int) -> str:
    version = version_name(1793491200.0 + 900 * index, "incremental", store.next_sequence())
    fields = {
        "kind": "incremental",
        "window": {"start": 0.0, "end": 1793491200.0 + 900 * index},
        "model_config": learner.config.to_json(),
        "metrics": {},
    }
    store.write_version(version, learner_files(learner), fields)
    store.point_latest(version)
    return version


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    settings = Settings(
        checkpoint_root=str(tmp_path),
        scorer={"admin_token": TOKEN, "poll_interval_seconds": 0.2},  # type: ignore[arg-type]
        trainer={"seed": 3},  # type: ignore[arg-type]
    )
    learner = Learner(settings)
    learner.fit(synthetic(4000, 1), "incremental")
    store = CheckpointStore(str(tmp_path))
    first = publish(store, learner, 1)
    features = FailingStore()
    profiles = MemoryProfileStore()
    snapshots = MemorySnapshotStore()
    fetcher = FeatureFetcher(features, CachedProfiles(profiles, ttl_seconds=60))
    writer = SnapshotWriter(snapshots, capacity=100)
    holder = ModelHolder(settings, store)
    app = create_app(settings, holder, fetcher, writer, follow_updates=False)
    with TestClient(app) as client:
        yield {
            "client": client,
            "store": store,
            "learner": learner,
            "first": first,
            "features": features,
            "snapshots": snapshots,
            "writer": writer,
            "holder": holder,
        }


def rank(client: TestClient, request_id: str = "r1", **extra: Any) -> Any:
    body = {"request_id": request_id, "user_id": "u1", "candidates": ["a1", "a2", "a9"], **extra}
    return client.post("/v1/rank", json=body)


def test_rank_orders_candidates_by_pctcvr_and_names_the_version(world: dict[str, Any]) -> None:
    response = rank(world["client"])
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == world["first"]
    assert body["degraded"] is False
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert {item["anchor_id"] for item in body["items"]} == {"a1", "a2", "a9"}
    for item in body["items"]:
        assert item["p_ctcvr"] == pytest.approx(item["p_ctr"] * item["p_cvr"], rel=1e-5)


def test_the_snapshot_is_what_the_model_saw(world: dict[str, Any]) -> None:
    import asyncio

    asyncio.run(
        world["features"].write(FeatureWrite(anchors={"a1": {"a_viewers": 42.0, "a_live": 1.0}}))
    )
    rank(world["client"], request_id="snap-1", scene="discover")
    deadline = time.time() + 5
    while "snap-1" not in world["snapshots"].rows and time.time() < deadline:
        time.sleep(0.02)
    snapshot = world["snapshots"].rows["snap-1"]
    assert set(snapshot) == {"a1", "a2", "a9"}
    assert snapshot["a1"]["a_viewers"] == 42.0
    assert snapshot["a9"]["a_viewers"] == 0.0  # unknown anchor: the catalogue default
    assert snapshot["a1"]["c_scene"] == "discover"


def test_the_scores_are_those_of_the_requests_samples(world: dict[str, Any]) -> None:
    """The service scores each candidate as the trainer scores that impression's sample:
    the snapshot's features plus the user and anchor IDs (a8 and a30 have the same
    features, so only their IDs can set them apart)."""
    response = rank(world["client"], request_id="ids-1", candidates=["a1", "a8", "a30"])
    answered = {item["anchor_id"]: item["p_ctcvr"] for item in response.json()["items"]}
    deadline = time.time() + 5
    while "ids-1" not in world["snapshots"].rows and time.time() < deadline:
        time.sleep(0.02)
    snapshot = world["snapshots"].rows["ids-1"]
    learner = world["learner"]
    samples = [{**snapshot[a], "user_id": "u1", "anchor_id": a} for a in ("a1", "a8", "a30")]
    _, _, p_ctcvr = learner.predict(rows_table(samples, [s.name for s in learner.specs]))
    for anchor_id, expected in zip(("a1", "a8", "a30"), p_ctcvr.tolist(), strict=True):
        assert answered[anchor_id] == pytest.approx(expected, rel=1e-5)
    assert answered["a8"] != pytest.approx(answered["a30"], rel=1e-3)


@pytest.mark.parametrize(
    "body",
    [
        {"request_id": "r", "user_id": "u", "candidates": []},
        {"request_id": "r", "user_id": "u", "candidates": ["a", "a"]},
        {"request_id": "", "user_id": "u", "candidates": ["a"]},
        {"user_id": "u", "candidates": ["a"]},
        {"request_id": "r", "user_id": "u", "candidates": "a1"},
    ],
)
def test_a_bad_request_is_a_422_with_the_reason(world: dict[str, Any], body: Any) -> None:
    response = world["client"].post("/v1/rank", json=body)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_a_store_down_gives_degraded_answers_not_errors(world: dict[str, Any]) -> None:
    world["features"].down = True
    response = rank(world["client"])
    assert response.status_code == 200 and response.json()["degraded"] is True
    world["features"].down = False
    assert rank(world["client"]).json()["degraded"] is False
    assert (
        'liverank_scorer_degraded_total{store="redis"} 1.0' in world["client"].get("/metrics").text
    )


def test_a_new_version_is_picked_up_and_a_corrupt_one_refused(
    world: dict[str, Any], tmp_path: Path
) -> None:
    learner, store, client = world["learner"], world["store"], world["client"]
    second = publish(store, learner, 2)
    deadline = time.time() + 5
    while rank(client).json()["model_version"] != second and time.time() < deadline:
        time.sleep(0.05)
    assert rank(client).json()["model_version"] == second
    third = publish(store, learner, 3)
    path = tmp_path / "versions" / third / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    time.sleep(0.6)
    assert rank(client).json()["model_version"] == second
    assert third in client.get("/v1/model").json()["refused"]


def test_admin_endpoints_need_the_token_and_rollback_works(world: dict[str, Any]) -> None:
    client, store, learner = world["client"], world["store"], world["learner"]
    second = publish(store, learner, 2)
    assert client.post("/v1/admin/reload").status_code == 401
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/v1/admin/reload", headers=headers).json()["version"] == second
    wrong = {"Authorization": "Bearer no"}
    assert client.post("/v1/admin/rollback", headers=wrong).status_code == 401
    answer = client.post("/v1/admin/rollback", headers=headers)
    assert answer.status_code == 200 and answer.json()["version"] == world["first"]
    time.sleep(0.5)  # the puller does not follow LATEST back to the version rolled back from
    assert rank(client).json()["model_version"] == world["first"]


def test_health_and_model_endpoints(world: dict[str, Any]) -> None:
    client = world["client"]
    assert client.get("/healthz").json() == {"ok": True, "model_version": world["first"]}
    model = client.get("/v1/model").json()
    assert model["version"] == world["first"] and model["kind"] == "incremental"


def test_an_admin_rollback_is_refused_when_several_processes_serve(tmp_path: Path) -> None:
    settings = Settings(
        checkpoint_root=str(tmp_path),
        scorer={"admin_token": TOKEN, "workers": 2},  # type: ignore[arg-type]
    )
    store = CheckpointStore(str(tmp_path))
    fetcher = FeatureFetcher(MemoryFeatureStore(), CachedProfiles(MemoryProfileStore(), 60))
    writer = SnapshotWriter(MemorySnapshotStore(), capacity=10)
    app = create_app(settings, ModelHolder(settings, store), fetcher, writer, follow_updates=False)
    with TestClient(app) as client:
        answer = client.post("/v1/admin/rollback", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 409 and "liverank models rollback" in answer.json()["detail"]


class GatedProfiles(MemoryProfileStore):
    """A profile store whose reads wait for ``gate`` (a slow HBase), or fail while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.down = False
        self.reads: list[tuple[str, list[str]]] = []

    def get(self, kind: str, ids: Any) -> dict[str, dict[str, str]]:
        ids = list(ids)
        self.reads.append((kind, ids))
        if not self.gate.wait(timeout=5):
            raise TimeoutError("the test never opened the gate")
        if self.down:
            raise ConnectionError("hbase is down")
        return super().get(kind, ids)


def gated_fetcher(clock: Any = time.monotonic) -> tuple[FeatureFetcher, GatedProfiles]:
    store = GatedProfiles()
    store.put("user", {"u1": {"gender": "f"}, "u2": {"gender": "m"}})
    store.put("anchor", {"a1": {"category": "music"}})
    fetcher = FeatureFetcher(
        MemoryFeatureStore(), CachedProfiles(store, 60), profile_timeout_seconds=0.2
    )
    fetcher.profiles.clock = clock
    return fetcher, store


def test_a_slow_profile_store_neither_blocks_the_loop_nor_holds_the_request() -> None:
    fetcher, store = gated_fetcher()

    async def scenario() -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        running = asyncio.create_task(ticker())
        began = time.monotonic()
        first, second = await asyncio.gather(
            fetcher.fetch("u1", ["a1"], "home"), fetcher.fetch("u1", ["a1"], "home")
        )
        waited = time.monotonic() - began
        assert 0.2 <= waited < 1.0  # the timeout, not the store's pace
        assert ticks >= 5  # the loop went on while the store was slow
        for fetched in (first, second):
            assert fetched.degraded == ["hbase"]
            assert fetched.rows.shared["p_gender"] == ""  # the default
        # One read of the user for both requests; the anchors' read queues behind it on
        # the one thread the store is read from.
        assert store.reads == [("user", ["u1"])]
        store.gate.set()
        while fetcher.profiles._reading:
            await asyncio.sleep(0.01)
        later = await fetcher.fetch("u1", ["a1"], "home")
        assert later.degraded == []
        assert later.rows.shared["p_gender"] == "f"
        assert later.rows.own["p_anchor_category"] == ["music"]
        assert sorted(store.reads) == [("anchor", ["a1"]), ("user", ["u1"])]  # no more
        running.cancel()

    asyncio.run(scenario())


def test_a_failing_profile_store_is_left_alone_a_while_then_read_again() -> None:
    now = [100.0]
    fetcher, store = gated_fetcher(clock=lambda: now[0])
    store.gate.set()
    store.down = True

    async def scenario() -> None:
        assert (await fetcher.fetch("u2", ["a1"], "home")).degraded == ["hbase"]
        reads = len(store.reads)
        assert (await fetcher.fetch("u2", ["a1"], "home")).degraded == ["hbase"]
        assert len(store.reads) == reads  # resting: not asked again at once
        store.down = False
        now[0] += fetcher.profiles.retry
        fetched = await fetcher.fetch("u2", ["a1"], "home")
        assert fetched.degraded == []
        assert fetched.rows.shared["p_gender"] == "m"

    asyncio.run(scenario())


def test_a_swapped_out_model_is_freed_without_the_cycle_collector(tmp_path: Path) -> None:
    """``liverank serve`` freezes the heap after each swap (``freeze_heap``), and frozen
    objects are freed by reference counting only: a model holding a reference cycle would
    leak at every swap."""
    settings = Settings(checkpoint_root=str(tmp_path))
    learner = Learner(settings)
    learner.fit(synthetic(2000, 1), "incremental")
    store = CheckpointStore(str(tmp_path))
    swapped: list[str] = []

    def note() -> None:
        assert holder.current is not None
        swapped.append(holder.current.version)

    holder = ModelHolder(settings, store, on_swap=note)
    versions = [publish(store, learner, 1)]
    holder.check()
    served = holder.current
    assert served is not None
    served.learner.predict(synthetic(200, 2))  # serving caches its weights (ESMM._served)
    gone: list[weakref.ref[Any]] = [weakref.ref(served.learner), weakref.ref(served.learner.model)]
    del served
    gc.collect()
    gc.disable()
    try:
        for index in (2, 3):  # the first model becomes the previous one, then is dropped
            versions.append(publish(store, learner, index))
            holder.check()
        assert [ref() for ref in gone] == [None, None]
    finally:
        gc.enable()
    assert swapped == versions


def test_the_served_app_freezes_the_heap_after_each_swap(tmp_path: Path) -> None:
    app = build_app(Settings(checkpoint_root=str(tmp_path)))
    assert app.state.holder.on_swap is freeze_heap
    frozen = gc.get_freeze_count()
    try:
        freeze_heap()
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()  # the rest of the test run keeps its collector
