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

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

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


@functools.cache
def defaults(*sources: Source) -> Mapping[str, float | str]:
    """Default values (an unknown user or anchor) of the given sources, read-only (computed
    once per combination: the scorer asks for them for every candidate).

    >>> defaults("user_anchor")["ua_last_watch_age"]
    -1.0
    """
    return MappingProxyType({f.name: f.default for f in CATALOG if f.source in sources})


_PACK_NAMES: Final = tuple(f.name for f in CATALOG)
_PACK_DEFAULTS: Final = tuple(f.default for f in CATALOG)


def pack_features(features: Mapping[str, Any]) -> str:
    """A feature row as compact JSON text: the catalogue's values in order, no names.

    A stream worker keeps one row per pending impression, a million of them in memory; as a
    dict a row costs ~1.8 KB, packed ~0.5 KB. Names outside the catalogue are dropped (they are
    no sample column); a missing name packs its default, as a landed sample would hold it.

    >>> text = pack_features({"u_ctr_decayed": 0.25, "c_scene": "home"})
    >>> row = unpack_features(text)
    >>> row["u_ctr_decayed"], row["c_scene"], row["a_status"], len(row) == len(CATALOG)
    (0.25, 'home', 'offline', True)
    """
    get = features.get
    return json.dumps(
        [get(name, default) for name, default in zip(_PACK_NAMES, _PACK_DEFAULTS, strict=True)],
        separators=(",", ":"),
    )


def unpack_features(text: str) -> dict[str, Any]:
    """The feature row ``pack_features`` packed, with every catalogue name."""
    return dict(zip(_PACK_NAMES, json.loads(text), strict=True))
