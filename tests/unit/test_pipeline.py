"""The worker's batch logic without faust: skewed topic interleaving, ticks, crashes, files.

Messages of a simulated day are consumed the way a Kafka consumer does during a replay: each
fetch takes a run of messages from one topic-partition, so thin topics run hours ahead of fat
ones. The watermark must still give exactly the offline labels; a worker that dies between
batches and restarts from its committed state must land the same files.
"""

from __future__ import annotations

import copy
import json
import math
import random
import zlib
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import pytest

from liverank.simulator.run import parse_start
from liverank.simulator.traffic import TrafficGenerator
from liverank.simulator.world import WorldConfig, build_world
from snapshots.layout import WINDOW_SECONDS, parse_window_folder, window_folder, window_start
from snapshots.samples import (
    SampleLander,
    completed_windows,
    document_row,
    latest_versions,
    read_completed,
    read_window,
)
from streams.events import Event, Invalid, encode_document, parse_event
from streams.join import LabelRules
from streams.pipeline import (
    REWIND_ATTEMPTS,
    Highwater,
    Lookups,
    Message,
    UserBatch,
    UserSide,
    land_batch,
    sample_document,
    tick_message,
)
from streams.reference import (
    EXACT_FEATURES,
    feature_differences,
    reference_features,
    reference_labels,
)
from streams.reorder import ReorderBuffer
from streams.watermark import PartitionWatermark

RULES = LabelRules()
PARTITIONS = 3
SOURCES = ("impressions", "clicks", "watch", "actions")
NO_LOOKUPS = Lookups(snapshots={}, anchors={}, user_profiles={}, anchor_profiles={})


Day = tuple[dict[tuple[str, int], list[Message]], list[Event]]


@pytest.fixture(scope="module")
def day() -> Day:
    return simulated_day(
        WorldConfig(
            days=0.5, users=150, anchors=50, seed=9, start_ts=parse_start("2026-11-04") - 6 * 3600
        )
    )


@pytest.fixture(scope="module")
def busy_evening() -> Day:
    """Six evening hours of 2,000 users: ~100 events per window and partition."""
    start = parse_start("2026-11-04") + 16 * 3600
    return simulated_day(WorldConfig(days=0.25, users=2000, anchors=100, seed=9, start_ts=start))


def simulated_day(config: WorldConfig) -> Day:
    queues: dict[tuple[str, int], list[Message]] = defaultdict(list)
    events: list[Event] = []
    for traffic in TrafficGenerator(build_world(config), seed=config.seed).days():
        for _, _, topic, key, document in traffic.events:
            if topic == "anchor-status":
                continue
            partition = zlib.crc32(key.encode()) % PARTITIONS
            queue = queues[(topic, partition)]
            value = encode_document(document)
            queue.append(Message(topic, partition, len(queue), key.encode(), value))
            event = parse_event(topic, value)
            assert not isinstance(event, Invalid)
            events.append(event)
    # A few malformed messages: they must become dead letters and change nothing.
    for partition in range(PARTITIONS):
        queue = queues[("clicks", partition)]
        queue.insert(len(queue) // 2, Message("clicks", partition, -1, b"u", b"{not json"))
        for offset, message in enumerate(queue):
            queue[offset] = Message(message.topic, partition, offset, message.key, message.value)
    return queues, events


def tables() -> dict[str, dict[str, Any]]:
    return {"join": {}, "users": {}, "user_anchor": {}}


def consume(
    queues: dict[tuple[str, int], list[Message]],
    rng: random.Random,
    committed: dict[tuple[str, int], int],
) -> list[list[Message]]:
    """Batches as a replaying consumer would fetch them, from the committed offsets on."""
    pending = {tp: deque(q[committed.get(tp, 0) :]) for tp, q in queues.items()}
    batches = []
    while any(pending.values()):
        batch: list[Message] = []
        for _ in range(rng.randint(1, 4)):
            live = [tp for tp, q in pending.items() if q]
            if not live:
                break
            queue = pending[rng.choice(live)]
            batch.extend(queue.popleft() for _ in range(min(len(queue), rng.randint(1, 400))))
        batches.append(batch)
    return batches


def ticks(
    queues: dict[tuple[str, int], list[Message]],
    ts: float,
    sent: dict[tuple[str, int], int] | None = None,
) -> list[Message]:
    """A tick to ``ts`` for every partition, after all of ``queues`` (or as much of each
    topic-partition as ``sent`` says) was sent."""
    ends = sent if sent is not None else {tp: len(queue) for tp, queue in queues.items()}
    return [
        tick_message(p, ts, {topic: ends.get((topic, p), 0) for topic in SOURCES})
        for p in range(PARTITIONS)
    ]


Log = dict[int, list[dict[str, Any]]]  # <prefix>.samples, partition -> the sample documents


def step(
    side: UserSide,
    lander: SampleLander,
    batch: list[Message],
    log: Log | None = None,
    every: float = 0.0,
    highwater: Highwater | None = None,
) -> UserBatch:
    """What the worker does with one batch: process, send the samples to the log, land and
    mark, then commit the state."""
    out = side.process(batch, NO_LOOKUPS, highwater)
    offsets: dict[int, list[int]] = {}
    for partition, samples in out.samples.items():
        sent = log.setdefault(partition, []) if log is not None else []
        offsets[partition] = list(range(len(sent), len(sent) + len(samples)))
        sent.extend(json.loads(sample_document(sample)) for sample in samples)
    land_batch(lander, out, every, offsets)
    side.commit()
    return out


def log_lander(root: Path, log: Log) -> SampleLander:
    """A worker's lander after a start: what the log holds beyond its files is read back."""
    lander = SampleLander(str(root), PARTITIONS, RULES.click_window, RULES.horizon, log="samples")
    for partition in range(PARTITIONS):
        sent = log.get(partition, [])
        start = lander.resume_offset(partition)
        read = [(o, document_row(sent[o])) for o in range(start, len(sent))]
        lander.recover(partition, read, len(sent))
    return lander


def run_worker(
    queues: dict[tuple[str, int], list[Message]],
    root: Path,
    seed: int,
    crash_every: int = 0,
    every: float = 0.0,
) -> tuple[UserSide, list[dict[str, Any]], SampleLander]:
    """Process everything; with ``crash_every``, die after that many batches and restart.
    Window files are written every ``every`` seconds of event time; until then their samples
    are only in the log, which a restarted worker reads back.

    As in faust, offsets are committed some batches after the state (which is written at
    once), so a restart reads again messages whose effects the tables already hold; and each
    table's changelog is its own topic, so at a crash each table independently may or may not
    have kept the writes made since the last offset commit.
    """
    rng = random.Random(seed)
    state = tables()
    at_commit = copy.deepcopy(state)
    committed: dict[tuple[str, int], int] = {}
    dead_letters: list[dict[str, Any]] = []
    last_ts = max(
        json.loads(m.value)["ts"]
        for q in queues.values()
        for m in q
        if m.value and m.value.startswith(b'{"')
    )
    log: Log = {}
    while True:
        side = UserSide(RULES, state, topic_of=lambda t: f"liverank.{t}")
        lander = log_lander(root, log)
        batches = consume(queues, rng, committed)
        crashed = False
        uncommitted: list[list[Message]] = []
        for number, batch in enumerate(batches, 1):
            if crash_every and number % crash_every == 0 and rng.random() < 0.7:
                crashed = True  # the process dies before this batch's outputs are durable
                break
            dead_letters.extend(step(side, lander, batch, log, every).dead_letters)
            uncommitted.append(batch)
            if rng.random() < 0.3:  # the periodic offset commit
                for done in uncommitted:
                    for message in done:
                        tp = (message.topic, message.partition)
                        committed[tp] = max(committed.get(tp, 0), message.offset + 1)
                uncommitted.clear()
                at_commit = copy.deepcopy(state)
        if not crashed:
            break
        for name in state:  # each changelog independently lost its newest writes, or not
            if rng.random() < 0.5:
                state[name] = copy.deepcopy(at_commit[name])
    step(side, lander, ticks(queues, last_ts + 3 * 3600), log, every)
    return side, dead_letters, lander


def landed(root: Path) -> dict[str, tuple[int, int, int]]:
    rows = read_completed(str(root), ["sample_id", "click", "conversion", "version"])
    return {r["sample_id"]: (r["click"], r["conversion"], r["version"]) for r in rows.to_pylist()}


def test_skewed_consumption_lands_exactly_the_offline_labels(day: Any, tmp_path: Path) -> None:
    queues, events = day
    side, dead_letters, _ = run_worker(queues, tmp_path, seed=1)
    expected = reference_labels(events, RULES)
    got = landed(tmp_path)
    assert {k: v[:2] for k, v in got.items()} == expected
    assert len(dead_letters) == PARTITIONS
    assert {d["error"][:14] for d in dead_letters} == {"not valid JSON"}
    assert side.open_samples() == 0
    folders = completed_windows(str(tmp_path))
    starts = [parse_window_folder(f) for f in folders]
    assert starts == [starts[0] + 900 * i for i in range(len(starts))]  # no window missing


@pytest.mark.parametrize("every", [0.0, 1800.0])
def test_a_worker_dying_between_batches_lands_the_same_files(
    day: Any, tmp_path: Path, every: float
) -> None:
    """Also when window files are written only every half hour of event time: what a dead
    worker had not written is read back from the samples log."""
    queues, _ = day
    run_worker(queues, tmp_path / "calm", seed=2)
    run_worker(queues, tmp_path / "crashing", seed=3, crash_every=3, every=every)
    calm, crashing = landed(tmp_path / "calm"), landed(tmp_path / "crashing")
    assert {k: v[:2] for k, v in crashing.items()} == {k: v[:2] for k, v in calm.items()}
    for folder in completed_windows(str(tmp_path / "calm")):
        start = parse_window_folder(folder)
        a = read_window(str(tmp_path / "calm"), start, latest=False)
        b = read_window(str(tmp_path / "crashing"), start, latest=False)
        assert a.num_rows == latest_versions(a).num_rows  # one row per sample in a file
        assert sorted(a["sample_id"].to_pylist()) == sorted(b["sample_id"].to_pylist())


def test_a_stopped_watermark_still_marks_the_windows_created_behind_it(tmp_path: Path) -> None:
    """Partition 1 had no event and was ticked to the end of the day before partition 0
    landed anything (the control topic read first): its watermark never moves again, so its
    one look at the folders found none. The sweep marks what partition 0 created later."""
    lander = SampleLander(str(tmp_path), 2, RULES.click_window, RULES.horizon)
    first = window_start(parse_start("2026-11-05"))
    end = first + 6 * 3600
    assert lander.mark(1, [], end) == []
    assert lander.mark(1, [], end) == []  # the same watermark again: no new look
    later = first + 5 * 3600  # closed for a watermark at ``end`` only after the click window
    assert lander.mark(0, [first, later], end) == []  # partition 1's markers are missing
    assert completed_windows(str(tmp_path)) == []
    early = first + WINDOW_SECONDS + RULES.click_window + 1  # ``first`` closed, ``later`` not
    assert lander.sweep({1: early}) == [window_folder(first)]
    assert lander.sweep({0: end, 1: end}) == [window_folder(later)]
    assert lander.sweep({0: end, 1: end}) == []
    assert lander.sweep({1: math.inf, 0: -math.inf}) == []  # no watermark yet: nothing
    assert completed_windows(str(tmp_path)) == [window_folder(first), window_folder(later)]


def assert_exact_features(root: Path, events: list[Event]) -> list[dict[str, Any]]:
    rows = read_completed(str(root), ["sample_id", *EXACT_FEATURES]).to_pylist()
    wrong = feature_differences(rows, reference_features(events))
    assert not wrong, f"{len(wrong)} feature values differ, e.g. {list(wrong.items())[:5]}"
    return rows


def test_impression_features_never_see_events_after_the_impression(
    day: Any, tmp_path: Path
) -> None:
    """Topics read hours apart: every sample still carries the user and user×anchor features
    of exactly the events before its impression, as an offline pass in event time gives."""
    queues, events = day
    side, _, _ = run_worker(queues, tmp_path, seed=4)
    assert side.held_events() == 0
    rows = assert_exact_features(tmp_path, events)
    # The check has teeth: clicks on the same anchor and recent history do show up.
    assert sum(1 for row in rows if row["ua_clicks_7d"] > 0) > 20
    assert sum(1 for row in rows if row["u_clicks_5m"] > 0) > 20


def test_a_worker_dying_between_batches_keeps_the_features_exact(day: Any, tmp_path: Path) -> None:
    queues, events = day
    run_worker(queues, tmp_path, seed=6, crash_every=3, every=1800.0)
    assert_exact_features(tmp_path, events)  # features read back from the log are the same


def in_event_time(queues: dict[tuple[str, int], list[Message]]) -> list[Message]:
    """Every message in event-time order across topics, each topic-partition in offset order
    (as a consumer delivers it): a malformed message keeps its place behind the one before."""
    keyed = []
    for queue in queues.values():
        ts = 0.0
        for message in queue:
            if message.value and message.value.startswith(b'{"'):
                ts = json.loads(message.value)["ts"]
            keyed.append((ts, message.offset, message))
    return [m for _, _, m in sorted(keyed, key=lambda item: item[:2])]


def run_live(day: Day, root: Path, every: float, deaths: int = 0) -> SampleLander:
    """A live worker: small batches of what was just sent, the watermark moving on with each
    (as on a busy partition, where every source has events). With ``deaths``, the process
    dies that many times at random after a batch was committed, before its lander wrote the
    window files that were not due yet; a new one starts from the log."""
    queues, events = day
    messages = in_event_time(queues)
    side = UserSide(RULES, tables(), topic_of=str)
    log: Log = {}
    lander = log_lander(root, log)
    sent: dict[tuple[str, int], int] = {}  # each topic-partition's end, read to it
    batches = range(0, len(messages), 20)
    dying = set(random.Random(deaths).sample(list(batches), deaths))
    for start in batches:
        batch = messages[start : start + 20]
        sent.update({(m.topic, m.partition): m.offset + 1 for m in batch})
        now = max(json.loads(m.value)["ts"] for m in batch if m.value.startswith(b'{"'))
        batch += ticks(queues, now - RULES.allowed_lateness, sent)
        step(side, lander, batch, log, every, lambda t, p: sent.get((t, p), 0))
        if start in dying:
            lander = log_lander(root, log)
    step(side, lander, ticks(queues, max(e.ts for e in events) + 3 * 3600), log, every)
    return lander


@pytest.mark.parametrize("every", [0.0, 1800.0])
def test_window_files_are_written_per_interval_of_event_time_not_per_batch(
    busy_evening: Day, tmp_path: Path, every: float
) -> None:
    """Rewriting every changed window file after each small batch grew with the square of a
    window's samples."""
    lander = run_live(busy_evening, tmp_path, every)
    _, events = busy_evening
    assert {k: v[:2] for k, v in landed(tmp_path).items()} == reference_labels(events, RULES)
    windows = len(list(tmp_path.rglob("*.parquet")))
    rewrites = lander.files_written / windows
    assert rewrites > 8 if every == 0 else rewrites < 4, (lander.files_written, windows)


def test_a_live_worker_dying_before_its_files_were_due_lands_the_same_files(
    busy_evening: Day, tmp_path: Path
) -> None:
    run_live(busy_evening, tmp_path / "calm", every=0.0)
    run_live(busy_evening, tmp_path / "dying", every=1800.0, deaths=5)
    assert landed(tmp_path / "dying") == landed(tmp_path / "calm")  # versions included
    for folder in completed_windows(str(tmp_path / "calm")):
        start = parse_window_folder(folder)
        calm = read_window(str(tmp_path / "calm"), start, latest=False)
        dying = read_window(str(tmp_path / "dying"), start, latest=False)
        assert dying.num_rows == latest_versions(dying).num_rows  # one row per sample
        assert dying.sort_by("sample_id").equals(calm.sort_by("sample_id"))


def test_the_lander_records_how_far_its_log_is_in_files(tmp_path: Path) -> None:
    queues: dict[tuple[str, int], list[Message]] = defaultdict(list)
    side = UserSide(RULES, tables(), topic_of=str)
    base = parse_start("2026-11-04")
    for i in range(3):
        impression = {"event_id": f"e{i}", "ts": base + 60 * i, "user_id": "u1"}
        impression |= {"anchor_id": f"a{i}", "request_id": f"r{i}", "scene": "home", "position": i}
        queue = queues[("impressions", 0)]
        queue.append(Message("impressions", 0, len(queue), b"u1", encode_document(impression)))
    log: Log = {}
    lander = log_lander(tmp_path, log)
    step(side, lander, queues[("impressions", 0)], log, every=3600.0)
    step(side, lander, ticks(queues, base + 1200), log, every=3600.0)  # first versions out
    assert len(log[0]) == 3 and lander.resume_offset(0) == 0  # none in a file yet
    assert not completed_windows(str(tmp_path))
    # A worker that died here reads the three back, and lands them all when they close.
    lander = log_lander(tmp_path, log)
    assert lander.unlanded(0) == 0
    step(side, lander, ticks(queues, base + 6 * 3600), log, every=3600.0)
    assert sorted(landed(tmp_path)) == sorted(d["sample_id"] for d in log[0])
    assert lander.resume_offset(0) == len(log[0])  # everything in files: nothing to read back
    other = SampleLander(str(tmp_path), PARTITIONS, RULES.click_window, RULES.horizon, log="x")
    assert other.resume_offset(0) == 0  # a record of another log (topic) is not this one's


@pytest.mark.parametrize("lost", ["join", "users", "user_anchor"])
def test_one_table_losing_its_last_writes_is_caught_up_on_replay(
    day: Any, tmp_path: Path, lost: str
) -> None:
    """After a crash one changelog may hold a batch's writes and another not: replaying the
    batch must bring the one that lost them up to date without the other blocking it."""
    queues, events = day
    messages = in_event_time(queues)
    half = len(messages) // 2
    state = tables()
    lander = SampleLander(str(tmp_path), PARTITIONS, RULES.click_window, RULES.horizon)

    def run(side: UserSide, batch: list[Message]) -> None:
        step(side, lander, batch)

    side = UserSide(RULES, state, topic_of=str)
    run(side, messages[: half // 2])
    before = copy.deepcopy(state)
    run(side, messages[half // 2 : half])
    state[lost] = before[lost]  # this table's writes of the second batch never reached Kafka
    side = UserSide(RULES, state, topic_of=str)
    run(side, messages[half // 2 : half])  # the offsets were not committed: read again
    run(side, messages[half:])
    run(side, ticks(queues, max(e.ts for e in events) + 3 * 3600))
    assert {k: v[:2] for k, v in landed(tmp_path).items()} == reference_labels(events, RULES)


def test_a_gap_in_offsets_is_read_again_not_skipped(day: Any, tmp_path: Path) -> None:
    """Offsets committed past events the tables never applied: the worker asks to rewind."""
    queues, _ = day
    tp = ("impressions", 0)
    queue = queues[tp]
    state = tables()
    lander = SampleLander(str(tmp_path), PARTITIONS, RULES.click_window, RULES.horizon)
    side = UserSide(RULES, state, topic_of=str)
    step(side, lander, queue[:10])
    out = step(side, lander, queue[20:30])  # 10..19 were lost: the consumer jumped
    assert out.rewind == {tp: 10}
    assert side.marks[0].offsets["impressions"] == 9  # nothing past the gap was applied
    # Messages fetched before the seek still arrive: refused, and the rewind asked again.
    assert step(side, lander, queue[30:40]).rewind == {tp: 10}
    assert side.marks[0].offsets["impressions"] == 9
    out = step(side, lander, queue[10:])  # read again from the gap
    assert out.rewind == {}
    assert side.marks[0].offsets["impressions"] == len(queue) - 1
    # A hole still there after REWIND_ATTEMPTS batches is taken for a hole in the log.
    other = queues[("clicks", 1)]
    step(side, lander, other[:3])
    for _ in range(REWIND_ATTEMPTS):
        assert step(side, lander, other[5:8]).rewind == {("clicks", 1): 3}
        assert side.marks[1].offsets["clicks"] == 2
    assert step(side, lander, other[5:8]).rewind == {}
    assert side.marks[1].offsets["clicks"] == 7
    assert side.counters.events_in["holes"] == 1


def test_a_partitions_first_messages_skipped_at_a_hand_over_are_read_again(
    day: Any, tmp_path: Path
) -> None:
    """A worker that gets a partition whose previous owner committed offsets but left no
    state (its first batch never became durable) is first delivered offset 5: with nothing
    applied yet the gap counts from offset 0, so it asks to read from 0 (a demo lost the first
    clicks of two partitions that way)."""
    queues, _ = day
    tp = ("clicks", 1)
    queue = queues[tp]
    lander = SampleLander(str(tmp_path), PARTITIONS, RULES.click_window, RULES.horizon)
    side = UserSide(RULES, tables(), topic_of=str)
    assert step(side, lander, queue[5:10]).rewind == {tp: 0}
    assert "clicks" not in side.marks[1].offsets  # nothing past the gap was applied
    assert step(side, lander, queue[:10]).rewind == {}
    assert side.marks[1].offsets["clicks"] == 9


def test_held_events_survive_a_restart_and_a_read_again_is_held_once() -> None:
    def doc(event_id: str, ts: float) -> bytes:
        return encode_document(
            {"event_id": event_id, "ts": ts, "user_id": "u", "anchor_id": "a", "request_id": "r"}
        )

    store: dict[str, Any] = {}
    buffer = ReorderBuffer(store, parse_event)
    for offset, ts in enumerate((50.0, 20.0, 80.0)):
        raw = doc(f"c{offset}", ts)
        event = parse_event("clicks", raw)
        assert not isinstance(event, Invalid)
        buffer.add("clicks", offset, event, raw)
    assert [e.ts for _, _, e in buffer.release(30.0)] == [20.0]
    buffer.flush()
    assert sorted(store) == ["clicks:0", "clicks:2"]
    restarted = ReorderBuffer(store, parse_event)  # the table is what is held
    raw = doc("c0", 50.0)
    event = parse_event("clicks", raw)
    assert not isinstance(event, Invalid)
    restarted.add("clicks", 0, event, raw)  # read again after the restart
    assert len(restarted) == 2
    assert [(o, e.ts) for _, o, e in restarted.release(math.inf)] == [(0, 50.0), (2, 80.0)]
    assert store == {}


def test_release_bound_follows_the_slowest_source_until_all_are_read_to_their_end() -> None:
    mark = PartitionWatermark(sources=("impressions", "clicks"), lateness=60.0)
    assert mark.release_bound() == -math.inf
    mark.observe("clicks", 0, 500.0)
    assert mark.release_bound(["clicks"]) == -math.inf  # impressions may still come
    mark.observe("impressions", 0, 100.0)
    assert mark.release_bound() == 100.0
    assert mark.release_bound(["clicks", "impressions"]) == math.inf
    mark.tick(300.0, {"impressions": 1, "clicks": 1})
    assert mark.release_bound() == 300.0 >= mark.value()
