"""The label rules of DESIGN §4, and what a sample's stream features must be, as plain
offline functions over a set of events.

No windows, no watermark, no arrival order: for every impression, look at all the events.
The stream join (``streams.join``) must agree with ``reference_labels`` whenever every event
arrived within the allowed lateness; the workers' samples must carry ``reference_features``
whenever each topic arrived in order, however far one topic ran ahead of another. Tests hold
them to that.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from features.catalog import names
from features.state import UserAnchorState, UserState
from streams.events import Action, Click, Event, Impression, Watch, event_topic
from streams.join import CONVERTING_ACTIONS, LabelRules
from streams.reorder import RANK

#: The stream features a sample's impression must see exactly. ``u_conversions_*`` are left
#: out: a conversion counts when the join learns it, at the close of the click window, which
#: depends on the watermark (never before the conversion happened, so never ahead of time).
EXACT_FEATURES = tuple(
    name for name in names("user", "user_anchor") if not name.startswith("u_conversions_")
)


def reference_labels(events: Iterable[Event], rules: LabelRules) -> dict[str, tuple[int, int]]:
    """sample_id → (click, conversion) for every impression in ``events``.

    Duplicates (a repeated event_id) count once; of two impressions of one sample the earliest
    (ts, event_id) is the impression.
    """
    unique = {event.event_id: event for event in events}
    impressions: dict[str, Impression] = {}
    clicks: dict[str, list[float]] = defaultdict(list)
    watch: dict[str, list[tuple[float, float]]] = defaultdict(list)
    converting: dict[str, list[float]] = defaultdict(list)
    for event in unique.values():
        if not isinstance(event, Impression | Click | Watch | Action):
            continue
        key = f"{event.request_id}:{event.anchor_id}"
        if isinstance(event, Impression):
            current = impressions.get(key)
            if current is None or (event.ts, event.event_id) < (current.ts, current.event_id):
                impressions[key] = event
        elif isinstance(event, Click):
            clicks[key].append(event.ts)
        elif isinstance(event, Watch):
            watch[key].append((event.ts, event.seconds))
        elif event.action in CONVERTING_ACTIONS:
            converting[key].append(event.ts)
    labels: dict[str, tuple[int, int]] = {}
    for key, impression in impressions.items():
        lo = impression.ts - rules.allowed_lateness
        hi = impression.ts + rules.click_window
        joining = [ts for ts in clicks[key] if lo <= ts <= hi]
        if not joining:
            labels[key] = (0, 0)
            continue
        start = min(joining)
        end = start + rules.conversion_window
        watched = sum(seconds for ts, seconds in watch[key] if start <= ts <= end)
        acted = any(start <= ts <= end for ts in converting[key])
        labels[key] = (1, int(watched >= rules.effective_watch_seconds or acted))
    return labels


def reference_features(events: Iterable[Event]) -> dict[str, dict[str, float | str]]:
    """sample_id → the user and user×anchor features (``EXACT_FEATURES``) as of its impression.

    Each user's events in event-time order (among equal times impressions first, then in the
    order given: the order the workers apply them in); an impression sees exactly the events
    before it. The sample's impression is its earliest, as in ``reference_labels``.
    """
    first: dict[str, tuple[int, Event]] = {}
    for index, event in enumerate(events):
        first.setdefault(event.event_id, (index, event))

    def order(indexed: tuple[int, Event]) -> tuple[float, int, int]:
        index, event = indexed
        return event.ts, RANK.get(event_topic(event), len(RANK)), index

    ordered = [event for _, event in sorted(first.values(), key=order)]
    users: dict[str, UserState] = {}
    pairs: dict[tuple[str, str], UserAnchorState] = {}
    out: dict[str, dict[str, float | str]] = {}
    for event in ordered:
        if not isinstance(event, Impression | Click | Watch | Action):
            continue
        user = users.setdefault(event.user_id, UserState.new())
        pair = pairs.setdefault((event.user_id, event.anchor_id), UserAnchorState.from_state(None))
        if isinstance(event, Impression):
            key = f"{event.request_id}:{event.anchor_id}"
            if key not in out:
                seen = {**user.features(event.ts), **pair.features(event.ts)}
                out[key] = {name: seen[name] for name in EXACT_FEATURES}
            user.impression(event.ts)
        elif isinstance(event, Click):
            user.click(event.ts, event.anchor_id)
            pair.click(event.ts)
        elif isinstance(event, Watch):
            user.watch(event.ts, event.seconds)
            pair.watch(event.ts, event.seconds)
        elif event.action == "follow":
            pair.follow(event.ts)
    return out


def feature_differences(
    landed: Iterable[Mapping[str, Any]], expected: Mapping[str, Mapping[str, float | str]]
) -> dict[tuple[str, str], tuple[Any, Any]]:
    """(sample_id, feature) → (landed, expected) wherever landed samples (rows with
    ``sample_id`` and the ``EXACT_FEATURES``) differ from ``reference_features``; a sample
    missing on either side shows as (sample_id, "")."""
    rows = {row["sample_id"]: row for row in landed}
    out: dict[tuple[str, str], tuple[Any, Any]] = {}
    for sample_id in rows.keys() ^ expected.keys():
        out[(sample_id, "")] = (sample_id in rows, sample_id in expected)
    for sample_id in rows.keys() & expected.keys():
        for name in EXACT_FEATURES:
            got, want = rows[sample_id][name], expected[sample_id][name]
            same = (
                got == want
                if isinstance(want, str)
                else math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
            )
            if not same:
                out[(sample_id, name)] = (got, want)
    return out
