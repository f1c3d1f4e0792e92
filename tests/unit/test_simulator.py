"""The live-platform simulator: deterministic, valid events, and traffic that obeys its own rules.

The checks recompute from the written event files what the generator claims in its ground
truth, so a generator bug shows up as a mismatch rather than being trusted.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from liverank.simulator.run import FileSink, NullSink, parse_start, simulate
from liverank.simulator.world import WorldConfig, build_world
from streams.events import INPUT_TOPICS, Invalid, parse_event

CONFIG = WorldConfig(days=1.5, users=300, anchors=80, seed=11, start_ts=parse_start("2026-11-01"))


def write(folder: Path, config: WorldConfig = CONFIG) -> dict[str, Any]:
    world = build_world(config)
    stats = simulate(config, FileSink(folder, world), world=world)
    return stats.as_dict()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("sim")
    return folder, write(folder)


def test_same_seed_gives_byte_identical_files(
    traffic: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    folder, _ = traffic
    write(tmp_path)
    names = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for name in names:
        assert (folder / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_another_seed_gives_other_traffic(tmp_path: Path) -> None:
    config = WorldConfig(days=0.25, users=100, anchors=40, seed=12, start_ts=CONFIG.start_ts)
    other = WorldConfig(days=0.25, users=100, anchors=40, seed=13, start_ts=CONFIG.start_ts)
    write(tmp_path / "a", config)
    write(tmp_path / "b", other)
    assert (tmp_path / "a/impressions.jsonl").read_bytes() != (
        tmp_path / "b/impressions.jsonl"
    ).read_bytes()


def test_every_event_is_valid_and_files_are_in_time_order(
    traffic: tuple[Path, dict[str, Any]],
) -> None:
    folder, stats = traffic
    ids: set[str] = set()
    for topic in INPUT_TOPICS:
        lines = (folder / f"{topic}.jsonl").read_bytes().splitlines()
        assert len(lines) == stats["events_by_topic"].get(topic, 0)
        previous = float("-inf")
        for line in lines:
            event = parse_event(topic, line)
            assert not isinstance(event, Invalid), (topic, event, line)
            assert event.ts >= previous
            previous = event.ts
            ids.add(event.event_id)
    assert len(ids) == stats["events"]  # event ids are unique


def test_impressions_only_show_anchors_that_are_live(traffic: tuple[Path, dict[str, Any]]) -> None:
    folder, _ = traffic
    timeline: dict[str, tuple[list[float], list[bool]]] = defaultdict(lambda: ([], []))
    for status in read_jsonl(folder / "anchor-status.jsonl"):
        times, live = timeline[status["anchor_id"]]
        times.append(status["ts"])
        live.append(status["live"])
    impressions = read_jsonl(folder / "impressions.jsonl")
    assert impressions
    for impression in impressions:
        times, live = timeline[impression["anchor_id"]]
        at = bisect.bisect_right(times, impression["ts"]) - 1
        assert at >= 0 and live[at], impression


def test_requests_show_distinct_anchors_in_positions_from_zero(
    traffic: tuple[Path, dict[str, Any]],
) -> None:
    folder, _ = traffic
    by_request: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for impression in read_jsonl(folder / "impressions.jsonl"):
        by_request[impression["request_id"]].append(impression)
    for rows in by_request.values():
        assert sorted(r["position"] for r in rows) == list(range(len(rows)))
        assert len({r["anchor_id"] for r in rows}) == len(rows)
        assert len({r["user_id"] for r in rows}) == 1


def test_ground_truth_matches_what_the_events_say(traffic: tuple[Path, dict[str, Any]]) -> None:
    """Clicks within the click window; conversion = ≥ 30 s watched or a follow / gift."""
    folder, stats = traffic
    truth = {
        (r["request_id"], r["anchor_id"]): r for r in read_jsonl(folder / "ground_truth.jsonl")
    }
    impressions = {
        (r["request_id"], r["anchor_id"]): r for r in read_jsonl(folder / "impressions.jsonl")
    }
    assert truth.keys() == impressions.keys()
    clicks = {(r["request_id"], r["anchor_id"]): r for r in read_jsonl(folder / "clicks.jsonl")}
    watched: dict[tuple[str, str], float] = defaultdict(float)
    for watch in read_jsonl(folder / "watch.jsonl"):
        key = (watch["request_id"], watch["anchor_id"])
        if watch["ts"] <= clicks[key]["ts"] + 1800:
            watched[key] += watch["seconds"]
    converting = {
        (a["request_id"], a["anchor_id"])
        for a in read_jsonl(folder / "actions.jsonl")
        if a["action"] in ("follow", "gift")
    }
    for key, row in truth.items():
        assert 0 < row["p_click"] < 1 and 0 < row["p_conversion"] < 1
        assert row["click"] == (key in clicks)
        if key in clicks:
            delay = clicks[key]["ts"] - impressions[key]["ts"]
            assert 0 < delay <= 300
            assert row["conversion"] == (watched[key] >= 30 or key in converting), key
        else:
            assert row["conversion"] == 0
    assert stats["clicks"] == len(clicks)
    assert 0.03 < stats["ctr"] < 0.3
    assert 0.2 < stats["conversion_rate"] < 0.9
    assert abs(stats["ctr"] - stats["mean_true_p_click"]) < 0.02


def test_screen_off_watching_happens(traffic: tuple[Path, dict[str, Any]]) -> None:
    folder, _ = traffic
    watch = read_jsonl(folder / "watch.jsonl")
    assert any(not w["screen_on"] for w in watch)
    assert all(0 < w["seconds"] <= 20 for w in watch)


def test_anchors_are_live_mostly_in_the_evening_and_new_ids_join(
    traffic: tuple[Path, dict[str, Any]],
) -> None:
    _, stats = traffic
    by_hour = stats["live_anchors_by_hour"]
    assert max(by_hour[19:24]) > 2 * max(by_hour[3:8])
    assert stats["new_users_by_day"][0] == 300 and stats["new_users_by_day"][1] > 0
    assert stats["new_anchors_by_day"][0] == 80 and stats["new_anchors_by_day"][1] > 0


def test_new_users_have_no_events_before_they_sign_up(traffic: tuple[Path, dict[str, Any]]) -> None:
    folder, _ = traffic
    users = pq.read_table(folder / "profiles" / "users.parquet").to_pylist()
    signup = {u["user_id"]: parse_start(u["signup_day"]) for u in users}
    assert {u["signup_day"] for u in users} == {"2026-11-01", "2026-11-02"}
    assert all(1 <= len(u["categories"]) <= 3 for u in users)
    for impression in read_jsonl(folder / "impressions.jsonl"):
        assert impression["ts"] >= signup[impression["user_id"]]


def test_status_changes_within_sessions(traffic: tuple[Path, dict[str, Any]]) -> None:
    folder, _ = traffic
    statuses = {s["status"] for s in read_jsonl(folder / "anchor-status.jsonl")}
    assert statuses == {"chatting", "performing", "pk", "offline"}


def test_dry_run_generates_the_same_statistics(traffic: tuple[Path, dict[str, Any]]) -> None:
    _, stats = traffic
    again = simulate(CONFIG, NullSink()).as_dict()
    assert again == stats


def test_bad_start_date_is_refused() -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_start("01/11/2026")


def test_drift_scales_only_how_fast_tastes_move() -> None:
    def timeline(drift: float) -> Any:
        config = WorldConfig(
            days=2, users=50, anchors=30, seed=3, start_ts=parse_start("2026-11-01"), drift=drift
        )
        return build_world(config).timeline

    default, double, static = timeline(1.0), timeline(2.0), timeline(0.0)
    assert (default.status == double.status).all() and (default.status == static.status).all()
    assert default.popularity.std() > 0.1 and abs(default.trend).max() > 0.1
    assert (double.popularity == 2 * default.popularity).all()
    assert np.allclose(double.trend, 2 * default.trend, rtol=1e-6, atol=1e-30)
    assert not static.popularity.any() and not static.trend.any()
