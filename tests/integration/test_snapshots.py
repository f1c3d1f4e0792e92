"""Request-time snapshots and offline profiles in the real HBase reach the landed samples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from deploy.local.services import LocalServices
from features.hbase import HBaseTables
from features.profiles import HBaseProfileStore
from liverank.settings import Settings
from liverank.simulator.run import parse_start, write_profiles
from liverank.simulator.world import WorldConfig, build_world
from snapshots.layout import parse_window_folder
from snapshots.samples import completed_windows, read_window
from snapshots.store import HBaseSnapshotStore
from streams.control import advance
from tests.integration.harness import (
    ROOT,
    parsed,
    publish,
    scoped,
    simulated_events,
    start_worker,
    stop,
    wait_for_last_window,
    worker_env,
)


def test_snapshot_store_round_trip(
    services: LocalServices, settings: Settings, unique: str, tmp_path: Path
) -> None:
    local = scoped(settings, f"hs{unique}", tmp_path)
    tables = HBaseTables(local.hbase.thrift_host, local.hbase.thrift_port, local.hbase.table_prefix)
    store = HBaseSnapshotStore(tables, ttl_seconds=3600)
    store.put("r1", {"a1": {"u_clicks_5m": 3.0, "a_status": "pk"}, "a2": {"u_clicks_5m": 3.0}})
    assert store.get(["r1", "r-missing"]) == {
        "r1": {"a1": {"u_clicks_5m": 3.0, "a_status": "pk"}, "a2": {"u_clicks_5m": 3.0}}
    }
    tables.close()


def test_a_broken_connection_is_dropped_and_the_next_call_reconnects(
    services: LocalServices, settings: Settings, unique: str, tmp_path: Path
) -> None:
    """A Thrift socket that broke stays broken: a read is made again on a new connection; a
    failed write drops the connection and the next call reconnects."""
    local = scoped(settings, f"hr{unique}", tmp_path)
    tables = HBaseTables(local.hbase.thrift_host, local.hbase.thrift_port, local.hbase.table_prefix)
    snapshots = HBaseSnapshotStore(tables, ttl_seconds=3600)
    profiles = HBaseProfileStore(tables)
    profiles.put("user", {"u1": {"gender": "f"}})
    snapshots.put("r1", {"a1": {"u_clicks_5m": 1.0}})
    tables.connection().transport.close()  # the socket goes away under the client
    assert profiles.get("user", ["u1"]) == {"u1": {"gender": "f"}}
    tables.connection().transport.close()
    assert snapshots.get(["r1"]) == {"r1": {"a1": {"u_clicks_5m": 1.0}}}
    tables.connection().transport.close()
    with pytest.raises(Exception):  # noqa: B017 - whatever Thrift raises for it
        snapshots.put("r2", {"a2": {"u_clicks_5m": 2.0}})
    assert tables._connection is None
    snapshots.put("r2", {"a2": {"u_clicks_5m": 2.0}})
    assert snapshots.get(["r2"]) == {"r2": {"a2": {"u_clicks_5m": 2.0}}}
    tables.close()


def test_samples_carry_the_served_snapshot_or_the_stream_state_with_profiles(
    services: LocalServices, settings: Settings, unique: str, tmp_path: Path
) -> None:
    local = scoped(settings, f"hp{unique}", tmp_path)
    day = simulated_events(days=0.5, users=80, anchors=30, seed=41)
    # Offline profiles through the CLI, from the simulator's Parquet files.
    config = WorldConfig(
        days=0.5, users=80, anchors=30, seed=41, start_ts=parse_start("2026-11-05")
    )
    write_profiles(build_world(config), tmp_path / "profiles")
    result = subprocess.run(
        [sys.executable, "-m", "liverank.cli", "profiles", "load", str(tmp_path / "profiles")],
        cwd=ROOT,
        env=worker_env(local),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "loaded 80 user and 30 anchor profiles" in result.stdout
    tables = HBaseTables(local.hbase.thrift_host, local.hbase.thrift_port, local.hbase.table_prefix)
    assert HBaseProfileStore(tables).get("user", ["u0000003"])["u0000003"]["gender"] in {
        "f",
        "m",
        "u",
    }
    # The scorer served one request with features of its own: the joiner must use them.
    impressions = [e for e in parsed(day) if type(e).__name__ == "Impression"]
    served = impressions[len(impressions) // 2]
    HBaseSnapshotStore(tables, 3600).put(
        served.request_id, {served.anchor_id: {"u_clicks_5m": 777.0, "a_status": "served-pk"}}
    )
    tables.close()
    worker = start_worker(local, "w0")
    try:
        publish(local, day)
        last = max(e.ts for e in parsed(day))
        advance(local, last + 3 * 3600)
        wait_for_last_window(local, last, 240)
    finally:
        stop(worker)
    table = pa.concat_tables(
        [
            read_window(local.samples_root, parse_window_folder(f))
            for f in completed_windows(local.samples_root)
        ]
    )
    rows = {r["sample_id"]: r for r in table.to_pylist()}
    sample = rows[f"{served.request_id}:{served.anchor_id}"]
    assert (sample["u_clicks_5m"], sample["a_status"]) == (777.0, "served-pk")
    others = [r for k, r in rows.items() if k != f"{served.request_id}:{served.anchor_id}"]
    assert all(r["p_gender"] in {"f", "m", "u"} for r in others)
    assert all(r["p_anchor_category"] for r in others)
    positions = {f"{i.request_id}:{i.anchor_id}": i.position for i in impressions}
    assert all(r["c_position"] == positions[k] for k, r in rows.items())
