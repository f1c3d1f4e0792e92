"""``liverank serve``: the scorer wired to the real stores named in the settings."""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import FastAPI

from features.hbase import HBaseTables
from features.profiles import CachedProfiles, HBaseProfileStore
from features.store import RedisFeatureStore
from liverank.settings import Settings
from scorer.fetch import FeatureFetcher
from scorer.models import ModelHolder, freeze_heap
from scorer.service import create_app
from scorer.snapshots import SnapshotWriter
from snapshots.store import HBaseSnapshotStore


def _hbase(settings: Settings) -> HBaseTables:
    hbase = settings.hbase
    return HBaseTables(hbase.thrift_host, hbase.thrift_port, hbase.table_prefix, hbase.timeout_ms)


def build_app(settings: Settings) -> FastAPI:
    redis = settings.redis
    store = RedisFeatureStore.from_url(
        redis.url,
        namespace=settings.kafka.topic_prefix,
        ttl_seconds=redis.feature_ttl_seconds,
        timeout=redis.socket_timeout_seconds,
        password=redis.password.get_secret_value() if redis.password else None,
    )
    profiles = CachedProfiles(
        HBaseProfileStore(_hbase(settings)), settings.hbase.profile_cache_seconds
    )
    fetcher = FeatureFetcher(
        store,
        profiles,
        timeout_seconds=redis.socket_timeout_seconds,
        profile_timeout_seconds=settings.scorer.profile_timeout_seconds,
    )
    writer = SnapshotWriter(
        HBaseSnapshotStore(_hbase(settings), settings.hbase.snapshot_ttl_seconds),
        settings.scorer.snapshot_queue_size,
    )
    return create_app(settings, ModelHolder(settings, on_swap=freeze_heap), fetcher, writer)


def app_from_environment() -> FastAPI:
    """One worker process's app (``scorer.workers`` > 1): the settings come from the
    ``LIVERANK_*`` variables ``serve`` set for its workers."""
    settings = Settings.load()
    _threads(settings)
    return build_app(settings)


def _threads(settings: Settings) -> None:
    import torch

    torch.set_num_threads(settings.scorer.torch_threads)


def serve(settings: Settings) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    options: dict[str, Any] = {
        "host": settings.scorer.host,
        "port": settings.scorer.port,
        "log_level": "warning",
        "access_log": False,
    }
    if settings.scorer.workers == 1:
        _threads(settings)
        uvicorn.run(build_app(settings), **options)
        return
    os.environ.update(settings.as_environment())
    uvicorn.run(
        "scorer.run:app_from_environment",
        factory=True,
        workers=settings.scorer.workers,
        **options,
    )
