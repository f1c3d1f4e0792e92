"""Tell scorers about a new LATEST: the manifest on ``<prefix>.model-updates``.

LATEST stays the source of truth (scorers also poll it), so a notification that cannot be
sent is logged and counted, never a failed publish.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from liverank.settings import Settings

log = logging.getLogger("liverank.trainer")


class Notifier(Protocol):
    def send(self, manifest: dict[str, Any]) -> bool: ...

    def close(self) -> None: ...


class NoNotifier:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, manifest: dict[str, Any]) -> bool:
        self.sent.append(manifest)
        return True

    def close(self) -> None:
        return None


class KafkaNotifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic("model-updates")
        self._producer: Any = None

    def send(self, manifest: dict[str, Any]) -> bool:
        try:
            if self._producer is None:
                from kafka import KafkaProducer

                self._producer = KafkaProducer(
                    client_id="liverank-trainer",
                    acks="all",
                    max_block_ms=5000,
                    bootstrap_timeout_ms=5000,
                    **self.settings.kafka.client_options(),
                )
            future = self._producer.send(
                self.topic,
                key=str(manifest["version"]).encode(),
                value=json.dumps(manifest, sort_keys=True).encode(),
            )
            future.get(timeout=10)
            return True
        except Exception as exc:  # the topic is a hint; LATEST is the truth
            log.warning("could not send %s to %s: %s", manifest.get("version"), self.topic, exc)
            return False

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
