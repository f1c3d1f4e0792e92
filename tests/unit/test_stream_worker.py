"""The faust worker ``liverank streams worker`` runs, as it is built (no services needed)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from liverank.settings import Settings
from streams.app import create_app, create_worker


@pytest.mark.parametrize("level", ["warning", "error"])
def test_a_quiet_worker_keeps_debug_logging_off(tmp_path: Path, level: str) -> None:
    """mode sets the root logger to the worker's level and then calls this hook with it; faust's
    spinner there put the root at DEBUG, so every debug call in faust and aiokafka built a
    record that no handler kept."""
    app, _ = create_app(Settings(home=str(tmp_path)))
    worker = create_worker(app, level)
    root = logging.Logger("root, as mode leaves it")
    root.addHandler(logging.StreamHandler())
    root.setLevel(getattr(logging, level.upper()))
    worker.on_setup_root_logger(root, root.level)
    assert not root.isEnabledFor(logging.DEBUG)
    assert len(root.handlers) == 1


def test_table_writes_reach_the_changelog_as_faust_writes_them(tmp_path: Path) -> None:
    """A worker restores its tables from their changelogs through faust, so the changelog
    messages the batch writes itself must be the ones faust's own ``send_changelog`` makes:
    same key and value bytes, same partition, a tombstone for a delete."""
    _, runtime = create_app(Settings(home=str(tmp_path)))
    mapping = runtime.user_tables["join"]
    table = mapping.table
    value = {"deadline": 1793491260.5, "slots": ["i", None, 3]}
    mapping["3/r1:a1"] = value
    del mapping["5/r2:a2"]
    written = [(p, k, v) for p, k, v, _ in mapping.unsent]
    topic = table.changelog_topic
    faust_made = []
    for partition, key, val, serializer in (
        (3, "3/r1:a1", value, None),
        (5, "5/r2:a2", None, "raw"),
    ):
        message = topic.as_future_message(
            key=key,
            value=val,
            partition=partition,
            key_serializer=table.key_serializer,
            value_serializer=serializer or table.value_serializer,
        ).message
        faust_made.append((message.partition, message.key, message.value))
    assert written == faust_made
    assert written[1][2] is None
    assert mapping["3/r1:a1"] == value and "5/r2:a2" not in mapping
