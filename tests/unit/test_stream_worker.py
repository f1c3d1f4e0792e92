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
