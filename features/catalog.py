"""The feature catalogue: every feature's name, kind and where it comes from.

One catalogue serves the stream workers (which compute and write features), the sample files
(one column per feature) and, later, the trainer and the scorer (which read them), so the
three cannot drift apart.

>>> [f.name for f in CATALOG if f.source == "user_anchor"]
['ua_clicks_7d', 'ua_watch_seconds_7d', 'ua_follows_7d', 'ua_last_watch_age']
>>> CATALOG_BY_NAME["a_status"].kind
'categorical'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Kind = Literal["numeric", "categorical", "sequence"]
Source = Literal["user", "anchor", "user_anchor", "profile_user", "profile_anchor", "context"]

WINDOWS: Final = {"5m": 300.0, "1h": 3600.0, "24h": 86400.0}
ANCHOR_WINDOWS: Final = {"5m": 300.0, "1h": 3600.0}
UA_WINDOW: Final = 7 * 86400.0
RECENT_ANCHORS: Final = 50
SESSION_GAP: Final = 1800.0
USER_CTR_HALF_LIFE: Final = 3600.0
ANCHOR_RATE_HALF_LIFE: Final = 1800.0


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind
    source: Source
    default: float | str = 0.0


def _windowed(prefix: str, metrics: tuple[str, ...], windows: dict[str, float]) -> list[Feature]:
    return [
        Feature(f"{prefix}_{m}_{w}", "numeric", _SOURCE[prefix]) for m in metrics for w in windows
    ]


_SOURCE: Final[dict[str, Source]] = {"u": "user", "a": "anchor"}

USER_METRICS: Final = ("impressions", "clicks", "conversions", "watch_seconds")
ANCHOR_METRICS: Final = ("impressions", "clicks", "enters", "gifts")

CATALOG: Final[tuple[Feature, ...]] = (
    *_windowed("u", USER_METRICS, WINDOWS),
    Feature("u_ctr_decayed", "numeric", "user"),
    Feature("u_since_last_session", "numeric", "user", -1.0),
    Feature("u_recent_anchors", "sequence", "user", ""),
    Feature("a_live", "numeric", "anchor"),
    Feature("a_status", "categorical", "anchor", "offline"),
    Feature("a_viewers", "numeric", "anchor"),
    Feature("a_live_seconds", "numeric", "anchor"),
    *_windowed("a", ANCHOR_METRICS, ANCHOR_WINDOWS),
    Feature("a_ctr", "numeric", "anchor"),
    Feature("a_cvr", "numeric", "anchor"),
    Feature("ua_clicks_7d", "numeric", "user_anchor"),
    Feature("ua_watch_seconds_7d", "numeric", "user_anchor"),
    Feature("ua_follows_7d", "numeric", "user_anchor"),
    Feature("ua_last_watch_age", "numeric", "user_anchor", -1.0),
    Feature("p_age_band", "categorical", "profile_user", ""),
    Feature("p_gender", "categorical", "profile_user", ""),
    Feature("p_user_categories", "sequence", "profile_user", ""),
    Feature("p_anchor_category", "categorical", "profile_anchor", ""),
    Feature("p_anchor_tags", "sequence", "profile_anchor", ""),
    Feature("c_scene", "categorical", "context", ""),
    Feature("c_position", "numeric", "context"),
)
CATALOG_BY_NAME: Final = {f.name: f for f in CATALOG}
SEQUENCE_SEPARATOR: Final = ","


def names(*sources: Source) -> list[str]:
    """Feature names of the given sources, in catalogue order."""
    return [f.name for f in CATALOG if f.source in sources]


def defaults(*sources: Source) -> dict[str, float | str]:
    """Default values (an unknown user or anchor) of the given sources."""
    return {f.name: f.default for f in CATALOG if f.source in sources}
