"""Real-time feature state of a user, an anchor and a user×anchor pair (pure, no I/O).

Each state is updated with events (event time only) and answers ``features(now)`` with the
catalogue's names. ``to_state`` / ``from_state`` give plain JSON-able values for the stream
tables. Duplicate events are recognised by ``seen`` (a bounded memory of event ids), so a
replayed event changes nothing.

>>> user = UserState.new()
>>> user.impression(100.0)
>>> user.click(110.0, "a7")
>>> f = user.features(120.0)
>>> f["u_impressions_5m"], f["u_clicks_5m"], f["u_recent_anchors"]
(1.0, 1.0, 'a7')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from features.aggregators import DecayedRate, RecentItems, Sessions, WindowedSum
from features.catalog import (
    ANCHOR_METRICS,
    ANCHOR_RATE_HALF_LIFE,
    ANCHOR_WINDOWS,
    RECENT_ANCHORS,
    SEQUENCE_SEPARATOR,
    SESSION_GAP,
    UA_WINDOW,
    USER_CTR_HALF_LIFE,
    USER_METRICS,
    WINDOWS,
)

SEEN_IDS = 256


def _newest(current: float | None, ts: float) -> float:
    return ts if current is None or ts > current else current


BUCKETS = 12


@dataclass
class SeenIds:
    """The last ``capacity`` event ids, to drop duplicates."""

    ids: dict[str, None]
    capacity: int = SEEN_IDS

    def check_and_add(self, event_id: str) -> bool:
        """True when ``event_id`` was seen already; otherwise remember it."""
        if event_id in self.ids:
            return True
        self.ids[event_id] = None
        if len(self.ids) > self.capacity:
            del self.ids[next(iter(self.ids))]
        return False


def _sums(
    windows: dict[str, float], metrics: tuple[str, ...], state: dict[str, Any] | None
) -> dict[str, WindowedSum]:
    saved = state or {}
    return {
        f"{m}_{w}": WindowedSum.from_state(seconds, BUCKETS, saved.get(f"{m}_{w}"))
        for m in metrics
        for w, seconds in windows.items()
    }


def _add(sums: dict[str, WindowedSum], metric: str, ts: float, value: float = 1.0) -> None:
    for name, counter in sums.items():
        if name.startswith(metric + "_"):
            counter.add(ts, value)


@dataclass
class UserState:
    sums: dict[str, WindowedSum]
    ctr: DecayedRate
    recent: RecentItems
    sessions: Sessions
    seen: SeenIds

    @classmethod
    def new(cls) -> UserState:
        return cls.from_state(None)

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> UserState:
        s = state or {}
        return cls(
            sums=_sums(WINDOWS, USER_METRICS, s.get("sums")),
            ctr=DecayedRate.from_state(USER_CTR_HALF_LIFE, 0.0, 0.0, s.get("ctr")),
            recent=RecentItems.from_state(RECENT_ANCHORS, s.get("recent")),
            sessions=Sessions.from_state(SESSION_GAP, s.get("sessions")),
            seen=SeenIds(dict.fromkeys(s.get("seen", []))),
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "sums": {k: v.to_state() for k, v in self.sums.items()},
            "ctr": self.ctr.to_state(),
            "recent": self.recent.to_state(),
            "sessions": self.sessions.to_state(),
            "seen": list(self.seen.ids),
        }

    def impression(self, ts: float) -> None:
        _add(self.sums, "impressions", ts)
        self.ctr.add(ts, 0.0, 1.0)
        self.sessions.add(ts)

    def click(self, ts: float, anchor_id: str) -> None:
        _add(self.sums, "clicks", ts)
        self.ctr.add(ts, 1.0, 0.0)
        self.recent.add(ts, anchor_id)
        self.sessions.add(ts)

    def watch(self, ts: float, seconds: float) -> None:
        _add(self.sums, "watch_seconds", ts, seconds)
        self.sessions.add(ts)

    def conversion(self, ts: float) -> None:
        _add(self.sums, "conversions", ts)

    def features(self, now: float) -> dict[str, float | str]:
        out: dict[str, float | str] = {f"u_{k}": v.total(now) for k, v in self.sums.items()}
        out["u_ctr_decayed"] = self.ctr.rate(now)
        out["u_since_last_session"] = self.sessions.since_previous(now)
        out["u_recent_anchors"] = SEQUENCE_SEPARATOR.join(self.recent.items())
        return out


@dataclass
class AnchorState:
    sums: dict[str, WindowedSum]
    ctr: DecayedRate
    cvr: DecayedRate
    live: bool
    status: str
    viewers: int
    live_since: float | None
    status_ts: float | None
    seen: SeenIds
    newest: float | None = None

    @classmethod
    def new(cls) -> AnchorState:
        return cls.from_state(None)

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> AnchorState:
        s = state or {}
        return cls(
            sums=_sums(ANCHOR_WINDOWS, ANCHOR_METRICS, s.get("sums")),
            ctr=DecayedRate.from_state(ANCHOR_RATE_HALF_LIFE, 0.0, 0.0, s.get("ctr")),
            cvr=DecayedRate.from_state(ANCHOR_RATE_HALF_LIFE, 0.0, 0.0, s.get("cvr")),
            live=bool(s.get("live", False)),
            status=str(s.get("status", "offline")),
            viewers=int(s.get("viewers", 0)),
            live_since=s.get("live_since"),
            status_ts=s.get("status_ts"),
            seen=SeenIds(dict.fromkeys(s.get("seen", []))),
            newest=s.get("newest"),
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "sums": {k: v.to_state() for k, v in self.sums.items()},
            "ctr": self.ctr.to_state(),
            "cvr": self.cvr.to_state(),
            "live": self.live,
            "status": self.status,
            "viewers": self.viewers,
            "live_since": self.live_since,
            "status_ts": self.status_ts,
            "seen": list(self.seen.ids),
            "newest": self.newest,
        }

    def status_update(self, ts: float, live: bool, status: str, viewers: int) -> None:
        """An anchor-status event; an older one than the newest applied is ignored."""
        self.newest = _newest(self.newest, ts)
        if self.status_ts is not None and ts < self.status_ts:
            return
        if live and not self.live:
            self.live_since = ts
        if not live:
            self.live_since = None
        self.live, self.status, self.viewers, self.status_ts = live, status, viewers, ts

    def activity(self, ts: float, kind: str) -> None:
        """Activity from the user side: impression, click, enter, gift or conversion."""
        self.newest = _newest(self.newest, ts)
        if kind == "conversion":
            self.cvr.add(ts, 1.0, 0.0)
            return
        _add(self.sums, _ACTIVITY_METRIC[kind], ts)
        if kind == "impression":
            self.ctr.add(ts, 0.0, 1.0)
        elif kind == "click":
            self.ctr.add(ts, 1.0, 0.0)
            self.cvr.add(ts, 0.0, 1.0)

    def features(self, now: float) -> dict[str, float | str]:
        out: dict[str, float | str] = {f"a_{k}": v.total(now) for k, v in self.sums.items()}
        out["a_live"] = 1.0 if self.live else 0.0
        out["a_status"] = self.status
        out["a_viewers"] = float(self.viewers)
        live_for = now - self.live_since if self.live and self.live_since is not None else 0.0
        out["a_live_seconds"] = max(0.0, live_for)
        out["a_ctr"] = self.ctr.rate(now)
        out["a_cvr"] = self.cvr.rate(now)
        return out


_ACTIVITY_METRIC = {
    "impression": "impressions",
    "click": "clicks",
    "enter": "enters",
    "gift": "gifts",
}
ACTIVITY_KINDS = (*_ACTIVITY_METRIC, "conversion")


@dataclass
class UserAnchorState:
    clicks: WindowedSum
    watch_seconds: WindowedSum
    follows: WindowedSum
    last_watch: float | None
    newest: float | None = None

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> UserAnchorState:
        s = state or {}
        return cls(
            clicks=WindowedSum.from_state(UA_WINDOW, 7, s.get("clicks")),
            watch_seconds=WindowedSum.from_state(UA_WINDOW, 7, s.get("watch")),
            follows=WindowedSum.from_state(UA_WINDOW, 7, s.get("follows")),
            last_watch=s.get("last_watch"),
            newest=s.get("newest"),
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "clicks": self.clicks.to_state(),
            "watch": self.watch_seconds.to_state(),
            "follows": self.follows.to_state(),
            "last_watch": self.last_watch,
            "newest": self.newest,
        }

    def click(self, ts: float) -> None:
        self.newest = _newest(self.newest, ts)
        self.clicks.add(ts)

    def watch(self, ts: float, seconds: float) -> None:
        self.newest = _newest(self.newest, ts)
        self.watch_seconds.add(ts, seconds)
        if self.last_watch is None or ts > self.last_watch:
            self.last_watch = ts

    def follow(self, ts: float) -> None:
        self.newest = _newest(self.newest, ts)
        self.follows.add(ts)

    def features(self, now: float) -> dict[str, float | str]:
        return {
            "ua_clicks_7d": self.clicks.total(now),
            "ua_watch_seconds_7d": self.watch_seconds.total(now),
            "ua_follows_7d": self.follows.total(now),
            "ua_last_watch_age": -1.0
            if self.last_watch is None
            else max(0.0, now - self.last_watch),
        }
