"""The simulated platform's population and its dynamics, precomputed at minute resolution.

Everything that makes a fresh model matter on a live platform is here, deterministic from a
seed: anchors that go live mostly in the evening with sessions that start and end, a status
that changes within a session (chatting / performing / pk) and moves click and watch
probabilities, popularity that drifts hour by hour, categories that trend for a few hours,
new anchors and new users every day, and users whose activity follows the hour of day.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CATEGORIES = (
    "music",
    "dance",
    "chat",
    "gaming",
    "outdoor",
    "comedy",
    "asmr",
    "talent",
    "education",
    "food",
    "beauty",
    "sports",
)
TAGS = (
    "vocal",
    "guitar",
    "piano",
    "rap",
    "electronic",
    "folk",
    "kpop",
    "cover",
    "original",
    "late-night",
    "morning",
    "newcomer",
    "veteran",
    "bilingual",
    "dialect",
    "duet",
)
STATUSES = ("chatting", "performing", "pk")
OFFLINE = -1
AGE_BANDS = ("<18", "18-24", "25-34", "35-44", "45+")
GENDERS = ("f", "m", "u")
MINUTES_PER_DAY = 1440
LATENT_DIM = 8

# How status moves clicks (logit) and watch/conversion (logit).
STATUS_CTR = np.array([0.0, 0.35, 0.6], dtype=np.float32)
STATUS_CVR = np.array([-0.2, 0.45, 0.3], dtype=np.float32)

# Relative activity by hour of day (users): lunch bump, evening peak, quiet night.
USER_HOURLY = np.array(
    [
        3,
        2,
        1.2,
        0.8,
        0.6,
        0.7,
        1.2,
        2.2,
        3,
        3,
        3.2,
        3.6,
        4.5,
        4.2,
        3.4,
        3.2,
        3.4,
        4,
        5,
        6.5,
        8,
        8.5,
        7.5,
        5,
    ],
    dtype=np.float64,
)
# Anchors start their sessions mostly in the evening.
ANCHOR_START_HOURLY = np.array(
    [
        1.5,
        0.8,
        0.4,
        0.2,
        0.2,
        0.3,
        0.6,
        1,
        1.5,
        2,
        2.2,
        2.4,
        2.8,
        2.6,
        2.2,
        2.2,
        2.6,
        3.5,
        5,
        7.5,
        9,
        8,
        5,
        3,
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class WorldConfig:
    days: float
    users: int
    anchors: int
    seed: int
    start_ts: float
    new_users_per_day: float = 0.06
    new_anchors_per_day: float = 0.06
    sessions_per_user_day: float = 2.5
    # How fast the world changes within a day: scales the hourly steps of anchor popularity
    # and the trending bursts (1 is the default scenario; 0 a world whose tastes never move).
    drift: float = 1.0


@dataclass
class Users:
    ids: list[str]
    join_day: np.ndarray  # int
    age_band: np.ndarray  # index into AGE_BANDS
    gender: np.ndarray  # index into GENDERS
    picked: list[tuple[int, ...]]  # categories picked at sign-up
    taste: np.ndarray  # [U, D]
    category_affinity: np.ndarray  # [U, C] hidden, includes the picked boost
    bias: np.ndarray  # [U]
    activity: np.ndarray  # expected sessions per day


@dataclass
class Anchors:
    ids: list[str]
    join_day: np.ndarray
    category: np.ndarray  # index into CATEGORIES
    tags: list[tuple[int, ...]]
    latent: np.ndarray  # [A, D]
    quality: np.ndarray  # [A]
    diligence: np.ndarray  # probability of going live on a day


@dataclass
class Timeline:
    """Per-minute state over the whole simulated span."""

    status: np.ndarray  # [A, M] int8: OFFLINE or an index into STATUSES
    popularity: np.ndarray  # [A, M] float32 logit offset, drifting
    session_start: np.ndarray  # [A, M] int32 minute the current session began (may be < 0)
    trend: np.ndarray  # [C, M] float32 logit boost of trending categories
    live_cache: dict[int, np.ndarray] = field(default_factory=dict)

    def live(self, minute: int) -> np.ndarray:
        """Indices of the anchors live at ``minute``."""
        cached = self.live_cache.get(minute)
        if cached is None:
            cached = np.flatnonzero(self.status[:, minute] >= 0)
            self.live_cache[minute] = cached
        return cached

    def viewers(self, anchor: int, minute: int, quality: float) -> int:
        status = int(self.status[anchor, minute])
        if status < 0:
            return 0
        level = 3.0 + 1.2 * quality + self.popularity[anchor, minute] + 0.4 * STATUS_CTR[status]
        return int(np.exp(level))


@dataclass
class World:
    config: WorldConfig
    users: Users
    anchors: Anchors
    timeline: Timeline
    minutes: int

    @property
    def day_count(self) -> int:
        return int(np.ceil(self.config.days))


def build_world(config: WorldConfig) -> World:
    """Draw the population and precompute the timeline; same config, same world."""
    rng = np.random.default_rng(config.seed)
    days = int(np.ceil(config.days))
    minutes = days * MINUTES_PER_DAY
    users = _draw_users(rng, config, days)
    anchors = _draw_anchors(rng, config, days)
    timeline = _draw_timeline(rng, anchors, days, minutes, config.drift)
    return World(config=config, users=users, anchors=anchors, timeline=timeline, minutes=minutes)


def _joining(rng: np.random.Generator, initial: int, rate: float, days: int) -> np.ndarray:
    per_day = [rng.poisson(initial * rate) for _ in range(1, days)]
    return np.concatenate(
        [np.zeros(initial, dtype=np.int32)]
        + [np.full(n, d + 1, dtype=np.int32) for d, n in enumerate(per_day)]
    )


def _draw_users(rng: np.random.Generator, config: WorldConfig, days: int) -> Users:
    join_day = _joining(rng, config.users, config.new_users_per_day, days)
    n = len(join_day)
    n_cat = len(CATEGORIES)
    picked: list[tuple[int, ...]] = []
    affinity = rng.normal(0.0, 0.45, size=(n, n_cat)).astype(np.float32)
    popularity_of_category = np.linspace(1.6, 0.5, n_cat)
    popularity_of_category /= popularity_of_category.sum()
    for u in range(n):
        k = int(rng.integers(1, 4))
        chosen = tuple(
            sorted(
                int(c) for c in rng.choice(n_cat, size=k, replace=False, p=popularity_of_category)
            )
        )
        picked.append(chosen)
        affinity[u, list(chosen)] += 0.7
    return Users(
        ids=[f"u{u:07d}" for u in range(n)],
        join_day=join_day,
        age_band=rng.choice(len(AGE_BANDS), size=n, p=[0.1, 0.35, 0.3, 0.15, 0.1]),
        gender=rng.choice(len(GENDERS), size=n, p=[0.48, 0.47, 0.05]),
        picked=picked,
        taste=rng.normal(0.0, 1.0, size=(n, LATENT_DIM)).astype(np.float32),
        category_affinity=affinity,
        bias=rng.normal(0.0, 0.4, size=n).astype(np.float32),
        activity=(config.sessions_per_user_day * rng.lognormal(-0.3, 0.75, size=n)).astype(
            np.float32
        ),
    )


def _draw_anchors(rng: np.random.Generator, config: WorldConfig, days: int) -> Anchors:
    join_day = _joining(rng, config.anchors, config.new_anchors_per_day, days)
    n = len(join_day)
    tags = [
        tuple(
            sorted(
                int(t) for t in rng.choice(len(TAGS), size=int(rng.integers(1, 4)), replace=False)
            )
        )
        for _ in range(n)
    ]
    return Anchors(
        ids=[f"a{a:06d}" for a in range(n)],
        join_day=join_day,
        category=rng.choice(len(CATEGORIES), size=n),
        tags=tags,
        latent=rng.normal(0.0, 1.0, size=(n, LATENT_DIM)).astype(np.float32),
        quality=rng.normal(0.0, 0.55, size=n).astype(np.float32),
        diligence=rng.beta(4, 2.5, size=n).astype(np.float32),
    )


def _draw_timeline(
    rng: np.random.Generator, anchors: Anchors, days: int, minutes: int, drift: float
) -> Timeline:
    n = len(anchors.ids)
    status = np.full((n, minutes), OFFLINE, dtype=np.int8)
    session_start = np.full((n, minutes), -1, dtype=np.int32)
    start_p = ANCHOR_START_HOURLY / ANCHOR_START_HOURLY.sum()
    transition = np.array([[0.0, 0.65, 0.35], [0.7, 0.0, 0.3], [0.75, 0.25, 0.0]])
    dwell_mean = np.array([14.0, 11.0, 8.0])  # minutes in a status
    for a in range(n):
        join = int(anchors.join_day[a])
        next_free = -MINUTES_PER_DAY
        # Anchors present from the start also lived the day before: sessions that began then
        # are still running at the first midnight, so the platform does not start empty.
        for day in range(join - 1 if join == 0 else join, days):
            if rng.random() > anchors.diligence[a]:
                continue
            hour = int(rng.choice(24, p=start_p))
            begin = max(day * MINUTES_PER_DAY + hour * 60 + int(rng.integers(0, 60)), next_free)
            length = int(np.clip(rng.gamma(3.0, 45.0), 30, 360))
            end = min(begin + length, minutes)
            if end <= max(begin, 0):
                continue
            t, s = begin, 0
            while t < end:
                stay = max(2, int(rng.exponential(dwell_mean[s])))
                if t + stay > 0:
                    status[a, max(t, 0) : min(t + stay, end)] = s
                t += stay
                s = int(rng.choice(3, p=transition[s]))
            session_start[a, max(begin, 0) : end] = begin
            next_free = end + 30
    # Popularity: an hourly random walk with mean reversion, linear between the hours.
    hours = minutes // 60 + 2
    steps = (drift * rng.normal(0.0, 0.22, size=(n, hours))).astype(np.float32)
    walk = np.zeros((n, hours), dtype=np.float32)
    for h in range(1, hours):
        walk[:, h] = 0.9 * walk[:, h - 1] + steps[:, h]
    grid = np.arange(minutes) / 60.0
    low = np.floor(grid).astype(int)
    frac = (grid - low).astype(np.float32)
    popularity = walk[:, low] * (1 - frac) + walk[:, low + 1] * frac
    # Trending categories: a few bursts a day, each lifting one category for hours.
    trend = np.zeros((len(CATEGORIES), minutes), dtype=np.float32)
    axis = np.arange(minutes, dtype=np.float32)
    for day in range(days):
        for _ in range(int(rng.poisson(3.5))):
            category = int(rng.integers(len(CATEGORIES)))
            center = day * MINUTES_PER_DAY + rng.uniform(9 * 60, 24 * 60)
            width = rng.uniform(30, 100)
            amplitude = drift * rng.uniform(0.6, 1.3) * rng.choice([1.0, 1.0, -0.6])
            trend[category] += (amplitude * np.exp(-0.5 * ((axis - center) / width) ** 2)).astype(
                np.float32
            )
    return Timeline(
        status=status,
        popularity=popularity.astype(np.float32),
        session_start=session_start,
        trend=trend,
    )
