"""Unit tests run without services and without the caller's LIVERANK_* environment."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_liverank_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LIVERANK_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def landed_days(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two simulated days (small world) landed as sample windows by the workers' pipeline."""
    from liverank.simulator.run import parse_start
    from liverank.simulator.traffic import TrafficGenerator
    from liverank.simulator.world import WorldConfig, build_world
    from streams.join import LabelRules
    from streams.offline import land_traffic

    root = tmp_path_factory.mktemp("samples")
    config = WorldConfig(days=2, users=400, anchors=120, seed=5, start_ts=parse_start("2026-11-01"))
    world = build_world(config)
    land_traffic(
        TrafficGenerator(world, seed=config.seed).days(), str(root), LabelRules(), world, 2,
        progress=lambda line: None,
    )  # fmt: skip
    return str(root)
