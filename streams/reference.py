"""The label rules of DESIGN §4 as a plain offline function over a set of events.

No windows, no watermark, no arrival order: for every impression, look at all the events.
The stream join (``streams.join``) must agree with this whenever every event arrived within
the allowed lateness; tests hold it to that.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from streams.events import Action, Click, Event, Impression, Watch
from streams.join import CONVERTING_ACTIONS, LabelRules


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
