"""Feature states answer with exactly the catalogue's names; stores round-trip them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from features.catalog import CATALOG, defaults, names
from features.profiles import CachedProfiles, MemoryProfileStore
from features.request import request_rows
from features.state import AnchorState, UserAnchorState, UserState
from features.store import FeatureWrite, HiredisPackingConnection, MemoryFeatureStore
from snapshots.samples import SCHEMA


def test_states_produce_the_catalogue_names() -> None:
    assert set(UserState.new().features(0.0)) == set(names("user"))
    assert set(AnchorState.new().features(0.0)) == set(names("anchor"))
    assert set(UserAnchorState.from_state(None).features(0.0)) == set(names("user_anchor"))
    assert SCHEMA.names[10:] == [f.name for f in CATALOG]


def test_user_state_round_trips_and_drops_duplicates() -> None:
    user = UserState.new()
    assert user.seen.check_and_add("e1") is False
    user.impression(100.0)
    user.click(110.0, "a1")
    user.watch(130.0, 20.0)
    user.conversion(130.0)
    restored = UserState.from_state(user.to_state())
    assert restored.features(140.0) == user.features(140.0)
    assert restored.seen.check_and_add("e1") is True
    f = user.features(140.0)
    assert (f["u_watch_seconds_5m"], f["u_conversions_1h"]) == (20.0, 1.0)
    assert abs(float(f["u_ctr_decayed"]) - 1.0) < 0.01  # the impression decayed a little


def test_anchor_state_follows_status_and_activity() -> None:
    anchor = AnchorState.new()
    anchor.status_update(1000.0, True, "chatting", 10)
    anchor.status_update(1300.0, True, "pk", 50)
    anchor.status_update(1200.0, True, "performing", 30)  # older: ignored
    for kind in ("impression", "impression", "click", "enter", "gift", "conversion"):
        anchor.activity(1310.0, kind)
    f = AnchorState.from_state(anchor.to_state()).features(1400.0)
    assert (f["a_live"], f["a_status"], f["a_viewers"], f["a_live_seconds"]) == (
        1.0,
        "pk",
        50.0,
        400.0,
    )
    assert (f["a_impressions_5m"], f["a_clicks_5m"], f["a_enters_5m"], f["a_gifts_5m"]) == (
        2.0,
        1.0,
        1.0,
        1.0,
    )
    assert 0.49 < float(f["a_ctr"]) < 0.51 and 0.99 < float(f["a_cvr"]) < 1.01
    anchor.status_update(2000.0, False, "offline", 0)
    assert anchor.features(2100.0)["a_live_seconds"] == 0.0


def test_memory_feature_store_reads_what_is_stored_and_rows_fill_the_defaults() -> None:
    store = MemoryFeatureStore()
    batch = FeatureWrite(
        users={"u1": {"u_clicks_5m": 2.0}},
        anchors={"a1": {"a_status": "pk", "a_viewers": 9.0}},
        user_anchor={("u1", "a1"): {"ua_clicks_7d": 3.0}},
    )
    asyncio.run(store.write(batch))
    got = asyncio.run(store.read("u1", ["a1", "a2"]))
    assert got.user == {"u_clicks_5m": 2.0}
    assert got.anchors == [{"a_status": "pk", "a_viewers": 9.0}, None]
    assert got.user_anchor == [{"ua_clicks_7d": 3.0}, None]
    rows = request_rows("u1", ["a1", "a2"], got.user, got.anchors, got.user_anchor, {}, {}, "home")
    assert rows.row(0)["u_clicks_5m"] == 2.0 and rows.row(1)["u_impressions_5m"] == 0.0
    assert rows.row(0)["a_status"] == "pk" and rows.row(1)["a_status"] == "offline"
    assert rows.row(0)["ua_clicks_7d"] == 3.0 and rows.row(1)["ua_clicks_7d"] == 0.0
    assert set(rows.row(1)) == set(
        defaults("user", "anchor", "user_anchor", "profile_user", "profile_anchor", "context")
    )


def test_profile_cache_hits_until_its_ttl() -> None:
    store = MemoryProfileStore()
    store.put("user", {"u1": {"age_band": "18-24", "gender": "f", "categories": "music,chat"}})
    now = [0.0]
    calls = []
    original = store.get

    def counting(kind: str, ids: object) -> dict[str, dict[str, str]]:
        calls.append(kind)
        return original(kind, ids)  # type: ignore[arg-type]

    store.get = counting  # type: ignore[method-assign]
    cache = CachedProfiles(store, ttl_seconds=60, clock=lambda: now[0])
    assert cache.features("user", ["u1"])["u1"]["p_user_categories"] == "music,chat"
    cache.features("user", ["u1"])
    assert calls == ["user"]
    now[0] = 61.0
    cache.features("user", ["u1"])
    assert calls == ["user", "user"]
    assert cache.features("user", ["nobody"])["nobody"] == {
        "p_age_band": "",
        "p_gender": "",
        "p_user_categories": "",
    }


def test_profile_cache_drops_expired_entries_as_it_fills() -> None:
    """A long-lived process holds the ids of the last TTL only; an id read again after its
    TTL counts from the new read."""
    now = [0.0]
    cache = CachedProfiles(MemoryProfileStore(), ttl_seconds=300, clock=lambda: now[0])
    cache.features("user", ["a", "b"])
    now[0] = 100.0
    cache.features("user", ["c"])
    assert len(cache) == 3
    now[0] = 310.0
    cache.features("user", ["a"])  # expired: read again; b (0) goes, c (100) stays
    assert len(cache) == 2
    now[0] = 420.0
    cache.features("user", ["d"])  # c (100) goes; a, read at 310, stays
    assert len(cache) == 2
    assert cache.cached("user", ["a", "d"])[1] == []


@pytest.mark.parametrize(
    "command",
    [
        ("MGET", "ns:a:a1", "ns:a:é"),
        ("SET", "k", b"\x00\xff", "EX", 5),
        ("HSET", "k", "f", 1.5),
        ("CLIENT SETINFO", "LIB-NAME", "redis-py"),
        (b"CLIENT SETINFO", "LIB-VER", "8"),
    ],
)
def test_the_store_packs_commands_as_redis_py_does(command: tuple[Any, ...]) -> None:
    theirs = b"".join(aioredis.Connection().pack_command(*command))
    assert b"".join(HiredisPackingConnection().pack_command(*command)) == theirs
