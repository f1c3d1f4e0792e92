"""A candidate's feature row as the model reads it — one function for streams and scorer.

The stream joiner builds an impression's features with it (when the scorer left no snapshot)
and the scorer builds each candidate's with it, from the same stores, so the two cannot drift.
Values missing from a part fall back to the catalogue defaults.

>>> row = candidate_features({"u_ctr_decayed": 0.2}, {}, {}, {}, {"p_anchor_category": "music"})
>>> row["u_ctr_decayed"], row["a_status"], row["p_anchor_category"], row["c_scene"]
(0.2, 'offline', 'music', '')
>>> with_context(row, "home", 3)["c_position"]
3.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from features.catalog import Source, defaults

STATE_SOURCES: tuple[Source, ...] = (
    "user",
    "anchor",
    "user_anchor",
    "profile_user",
    "profile_anchor",
)


def candidate_features(
    user: Mapping[str, Any],
    anchor: Mapping[str, Any],
    pair: Mapping[str, Any],
    user_profile: Mapping[str, Any],
    anchor_profile: Mapping[str, Any],
) -> dict[str, Any]:
    """The state features of one (user, anchor) pair; context is added by ``with_context``."""
    features: dict[str, Any] = dict(defaults(*STATE_SOURCES, "context"))
    for part in (user, anchor, pair, user_profile, anchor_profile):
        features.update(part)
    return features


def with_context(features: Mapping[str, Any], scene: str, position: int) -> dict[str, Any]:
    """The features with the request's scene and the slot shown (the scorer ranks with 0)."""
    return {**features, "c_scene": scene, "c_position": float(position)}
