"""A candidate's feature row as the model reads it — one function for streams and scorer.

The scorer builds a whole request with ``request_rows``; the stream joiner builds an
impression's features (when the scorer left no snapshot) with ``candidate_features``, which
is ``request_rows`` for one candidate, so the two cannot drift. Each feature is read from the
part its catalogue source names (the user's state, the anchor's, the pair's, the two
profiles); a feature its part does not hold, or a part not stored at all, is the catalogue
default. Names outside the catalogue are not features and are left out.

A request's rows are kept as two parts: what every candidate shares (the user's state and
profile, the context), once, and the candidates' own features as one column per feature. A
request of 200 candidates builds no 200 dicts.

>>> row = candidate_features({"u_ctr_decayed": 0.2}, {}, {}, {}, {"p_anchor_category": "music"})
>>> row["u_ctr_decayed"], row["a_status"], row["p_anchor_category"], row["c_scene"]
(0.2, 'offline', 'music', '')
>>> with_context(row, "home", 3)["c_position"]
3.0
>>> rows = request_rows("u1", ["a1", "a2"], {}, [{"a_viewers": 5.0}, None], [], {}, {}, "home")
>>> rows.own["a_viewers"], rows.row(1)["c_scene"]
([5.0, 0.0], 'home')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from features.catalog import defaults

Part = Mapping[str, Any] | None  # one store's values for one user, anchor or pair


def _values(part: Part, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The catalogue names ``wanted`` (name → default) as ``part`` holds them."""
    if not part:
        return dict(wanted)
    return {name: part.get(name, default) for name, default in wanted.items()}


def _columns(parts: Sequence[Part], wanted: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``_values`` of each part, as one column per name."""
    return {
        name: [default if part is None else part.get(name, default) for part in parts]
        for name, default in wanted.items()
    }


def _aligned(parts: Sequence[Part], n: int) -> list[Part]:
    """``parts`` cut or padded with ``None`` to ``n``."""
    return [*parts[:n], *[None] * (n - len(parts))]


@dataclass(frozen=True)
class RequestRows:
    """One request's candidate rows, kept as their two parts: ``shared`` (name → value, the
    same for every candidate) and ``own`` (name → one value per candidate, in
    ``anchor_ids`` order). The IDs are not features; the encoder reads them as the
    ``user_id`` and ``anchor_id`` columns, as it reads them from a sample. Built fresh for
    each request and never changed after, so it can be handed to another thread as is."""

    user_id: str
    anchor_ids: Sequence[str]
    shared: Mapping[str, Any]
    own: Mapping[str, Sequence[Any]]

    def __len__(self) -> int:
        return len(self.anchor_ids)

    def row(self, index: int) -> dict[str, Any]:
        return {**self.shared, **{name: values[index] for name, values in self.own.items()}}

    def rows(self) -> dict[str, dict[str, Any]]:
        """Each candidate's whole row, by anchor ID (what a request-time snapshot holds)."""
        return {a: self.row(i) for i, a in enumerate(self.anchor_ids)}


def request_rows(
    user_id: str,
    anchor_ids: Sequence[str],
    user: Part,
    anchors: Sequence[Part],
    pairs: Sequence[Part],
    user_profile: Part,
    anchor_profiles: Mapping[str, Mapping[str, Any]],
    scene: str,
    position: int = 0,
) -> RequestRows:
    """A request's rows from what the stores hold. ``anchors`` and ``pairs`` follow
    ``anchor_ids`` (``None``, or a list shorter than it, for what is not stored)."""
    n = len(anchor_ids)
    shared = {
        **_values(user, defaults("user")),
        **_values(user_profile, defaults("profile_user")),
        **defaults("context"),
        "c_scene": scene,
        "c_position": float(position),
    }
    own = {
        **_columns(_aligned(anchors, n), defaults("anchor")),
        **_columns(_aligned(pairs, n), defaults("user_anchor")),
        **_columns([anchor_profiles.get(a) for a in anchor_ids], defaults("profile_anchor")),
    }
    return RequestRows(user_id, anchor_ids, shared, own)


def candidate_features(
    user: Part, anchor: Part, pair: Part, user_profile: Part, anchor_profile: Part
) -> dict[str, Any]:
    """The features of one (user, anchor) pair, with an empty context (see ``with_context``)."""
    profiles = {"": anchor_profile} if anchor_profile else {}
    return request_rows("", [""], user, [anchor], [pair], user_profile, profiles, "").row(0)


def with_context(features: Mapping[str, Any], scene: str, position: int) -> dict[str, Any]:
    """The features with the request's scene and the slot shown (the scorer ranks with 0)."""
    return {**features, "c_scene": scene, "c_position": float(position)}
