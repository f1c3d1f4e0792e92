"""The checkpoint store of DESIGN §7: what scorers pull.

::

    <root>/versions/<version>/model.safetensors   weights (+ the trainer's optimizer state)
    <root>/versions/<version>/vocab.parquet       the vocabulary (+ counts of IDs not admitted)
    <root>/versions/<version>/manifest.json       written last: every file's sha256 and size
    <root>/LATEST                                 {"version", "manifest_sha256"}
    <root>/history.json                           what LATEST pointed to, and when

A version folder is written in full (each file atomically), read back and verified before
LATEST names it; LATEST itself is replaced atomically. So whatever moment a publisher dies at,
LATEST names a complete version. No pickle: safetensors, Parquet and JSON only.

>>> version_name(1793491200.0, "incremental", 42)
'20261101T000000Z-incr-000042'
>>> parse_version("20261101T000000Z-incr-000042")
(1793491200.0, 'incremental', 42)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from liverank.errors import LiverankError
from snapshots.storage import Root

Kind = Literal["offline", "incremental"]
FILES = ("model.safetensors", "vocab.parquet")
MANIFEST = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
STATE = "trainer.json"  # the incremental chain's state (``trainer.jobs``), next to LATEST
_KIND_TAG = {"offline": "base", "incremental": "incr"}
_TAG_KIND: dict[str, Kind] = {"base": "offline", "incr": "incremental"}
HISTORY_KEEP = 2000


class CheckpointError(LiverankError, ValueError):
    """A version is missing, partial or corrupt. It is never loaded or pointed to: publish it
    again, or roll back to a version that verifies (``liverank models list``)."""


def version_name(window_end: float, kind: Kind, sequence: int) -> str:
    moment = datetime.fromtimestamp(window_end, tz=UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{_KIND_TAG[kind]}-{sequence:06d}"


def parse_version(version: str) -> tuple[float, Kind, int]:
    """(window end, kind, sequence) of a version name; ValueError when it is not one."""
    try:
        stamp, tag, sequence = version.split("-")
        moment = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return moment.timestamp(), _TAG_KIND[tag], int(sequence)
    except (ValueError, KeyError):
        raise ValueError(f"{version!r} is not a version name") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Latest:
    version: str
    manifest_sha256: str


class CheckpointStore:
    """Versions, LATEST and retention under one root (local path or pyarrow URI)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.root = Root(uri)

    # -- names -------------------------------------------------------------------------------

    def _version_dir(self, version: str) -> str:
        parse_version(version)  # refuse anything that is not a version name (no ../)
        return self.root.join("versions", version)

    def versions(self) -> list[str]:
        """Every version folder (complete or not), oldest first."""
        names = []
        for path in self.root.list_dirs(self.root.join("versions")):
            name = path.rsplit("/", 1)[-1]
            try:
                parse_version(name)
            except ValueError:
                continue
            names.append(name)
        return sorted(names)

    def next_sequence(self) -> int:
        sequences = [parse_version(v)[2] for v in self.versions()]
        return max(sequences, default=0) + 1

    # -- writing -----------------------------------------------------------------------------

    def write_version(
        self, version: str, files: Mapping[str, bytes], fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Write the version's files, then its manifest, then verify it; return the manifest."""
        missing = [name for name in FILES if name not in files]
        if missing:
            raise CheckpointError(f"version {version}: files {missing} are required")
        folder = self._version_dir(version)
        manifest = {
            **fields,
            "version": version,
            "files": {
                name: {"sha256": sha256(data), "bytes": len(data)}
                for name, data in sorted(files.items())
            },
            "schema_version": MANIFEST_SCHEMA_VERSION,
        }
        for name, data in files.items():
            self.root.write_atomic(f"{folder}/{name}", data)
        self.root.write_atomic(f"{folder}/{MANIFEST}", _json_bytes(manifest))
        self.verify(version)
        return manifest

    def point_latest(self, version: str, event_time: float | None = None) -> Latest:
        """Verify ``version`` and make LATEST name it (atomically); record it in the history."""
        manifest_bytes = self.verify_bytes(version)
        latest = Latest(version, sha256(manifest_bytes))
        self.root.write_atomic(
            self.root.join("LATEST"),
            _json_bytes({"version": latest.version, "manifest_sha256": latest.manifest_sha256}),
        )
        history = self.history()
        history.append(
            {
                "version": version,
                "at": time.time(),
                "event_time": event_time if event_time is not None else parse_version(version)[0],
            }
        )
        self.root.write_atomic(self.root.join("history.json"), _json_bytes(history[-HISTORY_KEEP:]))
        return latest

    # -- reading -----------------------------------------------------------------------------

    def latest(self) -> Latest | None:
        path = self.root.join("LATEST")
        if not self.root.exists(path):
            return None
        try:
            data = json.loads(self.root.read_bytes(path))
            return Latest(str(data["version"]), str(data["manifest_sha256"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"LATEST in {self.uri} is unreadable: {exc}") from exc

    def trainer_state(self) -> dict[str, Any]:
        """The trainer's chain state (base, last window, last gate decision); {} before any."""
        path = self.root.join(STATE)
        if not self.root.exists(path):
            return {}
        return dict(json.loads(self.root.read_bytes(path)))

    def history(self) -> list[dict[str, Any]]:
        path = self.root.join("history.json")
        if not self.root.exists(path):
            return []
        try:
            history = json.loads(self.root.read_bytes(path))
        except ValueError:
            return []
        return list(history) if isinstance(history, list) else []

    def read_file(self, version: str, name: str) -> bytes:
        return self.root.read_bytes(f"{self._version_dir(version)}/{name}")

    def manifest(self, version: str) -> dict[str, Any]:
        return json.loads(self.verify_bytes(version))  # type: ignore[no-any-return]

    def verify_bytes(self, version: str) -> bytes:
        """The manifest's bytes once every file it lists matches its size and sha256."""
        folder = self._version_dir(version)
        manifest_path = f"{folder}/{MANIFEST}"
        if not self.root.exists(manifest_path):
            raise CheckpointError(f"version {version}: no {MANIFEST} (missing or partial)")
        raw = self.root.read_bytes(manifest_path)
        try:
            manifest = json.loads(raw)
            files = manifest["files"]
            schema = manifest["schema_version"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"version {version}: {MANIFEST} is unreadable: {exc}") from exc
        if schema != MANIFEST_SCHEMA_VERSION:
            raise CheckpointError(f"version {version}: manifest schema_version {schema!r}")
        if manifest.get("version") != version:
            raise CheckpointError(f"version {version}: manifest names {manifest.get('version')}")
        for name in FILES:
            if name not in files:
                raise CheckpointError(f"version {version}: manifest lists no {name}")
        for name, expected in files.items():
            path = f"{folder}/{name}"
            if not self.root.exists(path):
                raise CheckpointError(f"version {version}: {name} is missing")
            data = self.root.read_bytes(path)
            if len(data) != expected["bytes"] or sha256(data) != expected["sha256"]:
                raise CheckpointError(
                    f"version {version}: {name} does not match its manifest "
                    f"({len(data)} bytes, sha256 {sha256(data)[:12]}…; expected "
                    f"{expected['bytes']} bytes, {expected['sha256'][:12]}…)"
                )
        return raw

    def verify(self, version: str) -> None:
        self.verify_bytes(version)

    def verify_latest(self) -> Latest | None:
        """LATEST, once its version verifies and its manifest hash matches."""
        latest = self.latest()
        if latest is None:
            return None
        if sha256(self.verify_bytes(latest.version)) != latest.manifest_sha256:
            raise CheckpointError(f"LATEST's manifest_sha256 does not match {latest.version}")
        return latest

    # -- retention ---------------------------------------------------------------------------

    def retain(self, keep_last: int, keep_seconds: float, now: float) -> list[str]:
        """Delete versions outside retention; return them.

        Kept: the last ``keep_last`` versions, whatever LATEST names and its base, and every
        version LATEST named within ``keep_seconds`` of event time before ``now`` (rollback).
        """
        versions = self.versions()
        keep = set(versions[-keep_last:])
        latest = self.latest()
        if latest is not None:
            keep.add(latest.version)
            try:
                base = self.manifest(latest.version).get("base_version")
            except CheckpointError:
                base = None
            if base:
                keep.add(str(base))
        for entry in self.history():
            if float(entry.get("event_time", 0.0)) >= now - keep_seconds:
                keep.add(str(entry.get("version")))
        removed = [v for v in versions if v not in keep]
        for version in removed:
            self.root.delete_dir(self._version_dir(version))
        return removed


def _json_bytes(document: Any) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
