"""Unit tests run without services and without the caller's LIVERANK_* environment."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_liverank_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LIVERANK_"):
            monkeypatch.delenv(name)
