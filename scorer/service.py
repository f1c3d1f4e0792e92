"""The scorer's HTTP service (DESIGN §8), built by ``create_app`` from its collaborators.

``POST /v1/rank`` fetches every candidate's features (one Redis round trip, cached
profiles), scores all of them in one forward pass under ``torch.inference_mode()``, ranks by
pCTCVR (or a blend of pCTR and pCVR), queues the request-time snapshot and answers.
``GET /v1/model``, ``GET /healthz``, ``GET /metrics``; ``POST /v1/admin/reload`` and
``POST /v1/admin/rollback`` need ``Authorization: Bearer <scorer.admin_token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator

from liverank.errors import LiverankError
from liverank.settings import Settings
from scorer.fetch import FeatureFetcher
from scorer.models import ModelHolder, Puller
from scorer.snapshots import SnapshotWriter
from trainer.encode import RequestColumns

log = logging.getLogger("liverank.scorer")
MAX_CANDIDATES = 2000


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    user_id: str = Field(min_length=1, max_length=200)
    candidates: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        min_length=1, max_length=MAX_CANDIDATES
    )
    scene: str = Field("home", max_length=100)

    @field_validator("candidates")
    @classmethod
    def _distinct(cls, candidates: list[str]) -> list[str]:
        if len(set(candidates)) != len(candidates):
            raise ValueError("candidates must be distinct anchor ids")
        return candidates


class RankedItem(BaseModel):
    anchor_id: str
    score: float
    p_ctr: float
    p_cvr: float
    p_ctcvr: float


class RankResponse(BaseModel):
    request_id: str
    model_version: str
    items: list[RankedItem]
    degraded: bool = False


class RollbackRequest(BaseModel):
    version: str | None = None


class ScorerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("liverank_scorer_requests", "Rank requests", ["status"], registry=r)
        self.latency = Histogram(
            "liverank_scorer_latency_seconds",
            "Rank request time inside the service",
            buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.5),
            registry=r,
        )
        self.degraded = Counter(
            "liverank_scorer_degraded", "Requests scored with defaults", ["store"], registry=r
        )
        self.model_age = Gauge(
            "liverank_scorer_model_window_end", "Event-time end of the serving model", registry=r
        )
        self.swaps = Gauge("liverank_scorer_model_swaps", "Models swapped in", registry=r)
        self.refused = Gauge("liverank_scorer_refused_versions", "Versions refused", registry=r)
        self.snapshots_dropped = Gauge(
            "liverank_scorer_snapshots_dropped", "Snapshots dropped (queue full)", registry=r
        )
        self.snapshots_written = Gauge(
            "liverank_scorer_snapshots_written", "Snapshots written", registry=r
        )


def create_app(
    settings: Settings,
    holder: ModelHolder,
    fetcher: FeatureFetcher,
    snapshots: SnapshotWriter,
    follow_updates: bool = True,
) -> FastAPI:
    metrics = ScorerMetrics()
    puller = Puller(holder, settings.scorer.poll_interval_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(holder.check)
        await fetcher.open()
        puller.start()
        snapshots.start()
        follower = (
            asyncio.create_task(_follow_updates(settings, puller)) if follow_updates else None
        )
        try:
            yield
        finally:
            if follower is not None:
                follower.cancel()
            puller.stop()
            snapshots.close()

    app = FastAPI(title="liverank scorer", lifespan=lifespan)
    app.state.holder = holder
    app.state.metrics = metrics
    token = settings.scorer.admin_token

    def admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            raise HTTPException(403, "admin endpoints are off: set LIVERANK_SCORER__ADMIN_TOKEN")
        if authorization != f"Bearer {token.get_secret_value()}":
            raise HTTPException(401, "a valid bearer token is required")

    @app.post("/v1/rank", response_model=RankResponse)
    async def rank(request: RankRequest) -> Response:
        began = time.perf_counter()
        served = holder.current  # this request finishes on this model, whatever swaps in
        if served is None:
            metrics.requests.labels(status="no_model").inc()
            raise HTTPException(503, "no model loaded yet (is LATEST published?)")
        fetched = await fetcher.fetch(request.user_id, request.candidates, request.scene)
        learner = served.learner
        p_ctr, p_cvr, p_ctcvr = learner.predict_batch(
            learner.encoder.encode(RequestColumns(fetched.rows))
        )
        if settings.scorer.score == "blend":
            weight = settings.scorer.blend_ctr_weight
            score = weight * p_ctr + (1 - weight) * p_cvr
        else:
            score = p_ctcvr
        if not np.isfinite(score).all():  # the gate publishes finite weights only
            metrics.requests.labels(status="error").inc()
            raise HTTPException(500, f"model {served.version} gave a non-finite score")
        order = np.argsort(-score, kind="stable")
        # The answer is built as plain JSON (the shape of RankResponse, which documents it):
        # 200 pydantic items and their validation cost more than the model's forward pass.
        items = [
            {
                "anchor_id": request.candidates[i],
                "score": s,
                "p_ctr": ctr,
                "p_cvr": cvr,
                "p_ctcvr": ctcvr,
            }
            for i, s, ctr, cvr, ctcvr in zip(
                order.tolist(),
                score[order].tolist(),
                p_ctr[order].tolist(),
                p_cvr[order].tolist(),
                p_ctcvr[order].tolist(),
                strict=True,
            )
        ]
        snapshots.offer(request.request_id, fetched.rows)
        for store in fetched.degraded:
            metrics.degraded.labels(store=store).inc()
        metrics.requests.labels(status="degraded" if fetched.degraded else "ok").inc()
        metrics.latency.observe(time.perf_counter() - began)
        answer = {
            "request_id": request.request_id,
            "model_version": served.version,
            "items": items,
            "degraded": bool(fetched.degraded),
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    @app.get("/v1/model")
    def model() -> dict[str, Any]:
        served = holder.current
        if served is None:
            raise HTTPException(503, "no model loaded yet")
        return {
            "version": served.version,
            "previous": holder.previous.version if holder.previous else None,
            "kind": served.manifest.get("kind"),
            "window": served.manifest.get("window"),
            "metrics": served.manifest.get("metrics"),
            "loaded_at": served.loaded_at,
            "refused": holder.refused,
        }

    @app.get("/healthz")
    def healthz() -> Response:
        served = holder.current
        ok = served is not None
        body = {"ok": ok, "model_version": served.version if served else None}
        return Response(
            json.dumps(body), status_code=200 if ok else 503, media_type="application/json"
        )

    @app.get("/metrics")
    def prometheus() -> Response:
        served = holder.current
        if served is not None:
            metrics.model_age.set(served.window_end)
        metrics.swaps.set(holder.swaps)
        metrics.refused.set(len(holder.refused))
        metrics.snapshots_dropped.set(snapshots.dropped)
        metrics.snapshots_written.set(snapshots.written)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/admin/reload", dependencies=[Depends(admin)])
    async def reload() -> dict[str, Any]:
        version = await asyncio.to_thread(holder.check, True)
        return {"version": version, "refused": holder.refused}

    @app.post("/v1/admin/rollback", dependencies=[Depends(admin)])
    async def rollback(body: RollbackRequest | None = None) -> dict[str, Any]:
        if settings.scorer.workers > 1:
            raise HTTPException(
                409,
                f"this scorer runs {settings.scorer.workers} worker processes and a rollback "
                "here would move only the one answering: roll LATEST back with `liverank "
                "models rollback VERSION` (every worker follows within its poll interval)",
            )
        try:
            served = await asyncio.to_thread(holder.rollback, body.version if body else None)
        except LiverankError as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"version": served.version}

    return app


async def _follow_updates(settings: Settings, puller: Puller) -> None:
    """Nudge the puller on every message of ``<prefix>.model-updates`` (polling goes on
    regardless, so Kafka being away only slows the pick-up down to the poll interval)."""
    from aiokafka import AIOKafkaConsumer

    while True:
        consumer = None
        try:
            consumer = AIOKafkaConsumer(
                settings.topic("model-updates"),
                bootstrap_servers=settings.kafka.bootstrap_servers,
                auto_offset_reset="latest",
                enable_auto_commit=False,
            )
            await consumer.start()
            async for _ in consumer:
                puller.nudge()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("not following model-updates (polling only): %s", exc)
            await asyncio.sleep(30)
        finally:
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await consumer.stop()
