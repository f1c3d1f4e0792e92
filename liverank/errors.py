"""The root of liverank's errors. Each package's ``exceptions`` says what the operator does next."""

from __future__ import annotations


class LiverankError(Exception):
    """Something liverank cannot go on with; the message says what to do about it."""
