"""The checkpoint store: verified versions, atomic LATEST, retention, crash safety."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.checkpoints import CheckpointError, CheckpointStore, version_name

DAY0 = 1793491200.0


def publish(store: CheckpointStore, index: int, size: int = 1000) -> str:
    version = version_name(DAY0 + 900 * index, "incremental", store.next_sequence())
    files = {"model.safetensors": os.urandom(size), "vocab.parquet": os.urandom(size // 2)}
    store.write_version(
        version, files, {"kind": "incremental", "window": {"end": DAY0 + 900 * index}}
    )
    store.point_latest(version)
    return version


def test_a_published_version_verifies_and_latest_names_it(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    version = publish(store, 1)
    latest = store.verify_latest()
    assert latest is not None and latest.version == version
    manifest = store.manifest(version)
    assert set(manifest["files"]) == {"model.safetensors", "vocab.parquet"}
    assert json.loads((tmp_path / "LATEST").read_text())["version"] == version


def test_a_flipped_byte_or_a_missing_file_fails_verification(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    version = publish(store, 1)
    path = tmp_path / "versions" / version / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match"):
        store.verify(version)
    other = publish(store, 2)
    (tmp_path / "versions" / other / "vocab.parquet").unlink()
    with pytest.raises(CheckpointError, match=r"vocab\.parquet is missing"):
        store.verify(other)
    with pytest.raises(CheckpointError):
        store.point_latest(other)  # never pointed to


def test_rollback_points_latest_at_an_earlier_verified_version(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    first = publish(store, 1)
    publish(store, 2)
    store.point_latest(first)
    latest = store.verify_latest()
    assert latest is not None and latest.version == first
    assert [h["version"] for h in store.history()][-1] == first


def test_retention_keeps_the_last_k_latest_and_recently_served_versions(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    versions = [publish(store, i) for i in range(10)]
    store.point_latest(versions[2])  # a rollback
    removed = store.retain(keep_last=3, keep_seconds=900 * 2.5, now=DAY0 + 900 * 9)
    kept = set(store.versions())
    assert versions[2] in kept  # LATEST
    assert set(versions[-3:]) <= kept
    assert versions[0] in removed and versions[0] not in kept
    assert set(removed) | kept == set(versions)


def test_version_names_refuse_paths(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    with pytest.raises(ValueError):
        store.verify("../../etc")


PUBLISHER = """
import os, sys
from trainer.checkpoints import CheckpointStore, version_name
store = CheckpointStore(sys.argv[1])
index = 0
while True:
    index += 1
    version = version_name(1793491200.0 + 900 * index, "incremental", store.next_sequence())
    files = {"model.safetensors": os.urandom(3_000_000), "vocab.parquet": os.urandom(500_000)}
    store.write_version(version, files, {"kind": "incremental", "window": {"end": 0}})
    store.point_latest(version)
    store.retain(keep_last=3, keep_seconds=0, now=0)
"""


def test_killing_the_publisher_never_leaves_latest_naming_a_partial_version(
    tmp_path: Path,
) -> None:
    rng = random.Random(8)
    store = CheckpointStore(str(tmp_path))
    kills = 0
    seen = set()
    while kills < 20:
        process = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(tmp_path)])
        time.sleep(rng.uniform(0.3, 1.5))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
        latest = store.latest()
        if latest is None:
            continue
        store.verify_latest()  # raises on a missing or partial version
        seen.add(latest.version)
    assert len(seen) >= 5  # the publisher did get through, many times
