"""JSON documents the commands write (reports, replay results): strict JSON, so a NaN or an
infinity (an AUC over one class, a mean over nothing) is written as null."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float inside it replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def to_json(document: Any) -> str:
    """Indented strict JSON (``allow_nan=False`` proves nothing non-finite slipped through)."""
    return json.dumps(finite(document), indent=2, allow_nan=False) + "\n"
