"""Integration tests run against the real local Kafka, Redis and HBase.

They are started (idempotently) through the same code as ``liverank services up``; nothing
here is a mock. Every test in this folder is marked ``integration``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.local.scratch import forget
from deploy.local.services import LocalServices, print_progress
from liverank.settings import Settings
from tests.integration.harness import SCOPED

ROOT = Path(__file__).resolve().parents[2]
CLEANED: list[str] = []  # what the session deleted at its end, for the terminal summary


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def settings() -> Settings:
    # The services live under the repository's .liverank/ whatever the working directory.
    return Settings.load(home=ROOT / ".liverank")


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[LocalServices]:
    local = LocalServices(settings, progress=print_progress)
    local.up()
    yield local
    # The session's topics and tables go: left behind, every run added hundreds of Kafka
    # partitions and dozens of HBase regions to the local services, until they ran short.
    if SCOPED and not os.environ.get("LIVERANK_TEST_KEEP_DATA"):
        CLEANED.append(forget(settings, sorted(SCOPED)).summary())


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for summary in CLEANED:  # the teardown's own output is captured
        terminalreporter.write_line(f"[services] this session's topics and tables: {summary}")


@pytest.fixture
def unique() -> str:
    """A fresh suffix for topic, group and table names, so tests never see each other's data."""
    return uuid.uuid4().hex[:10]
