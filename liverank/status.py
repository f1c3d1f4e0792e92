"""``liverank status``: the operator's one screen.

Consumer lag and watermark per partition (Kafka and the workers' stats files), the join rate,
the model in LATEST and the one the scorer serves (version, age), and the trainer's last gate
decision with its reason. Every part that cannot be reached says so; status never fails
because one service is down.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from liverank.settings import Settings
from streams.control import combine_stats, read_stats
from streams.pipeline import USER_SOURCES
from streams.topics import consumer_group
from trainer.checkpoints import CheckpointStore, parse_version


def consumer_lag(settings: Settings) -> dict[str, Any]:
    """Messages the workers' group has not committed yet, per partition (user topics summed)
    and per topic; or the error when Kafka cannot be asked."""
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient
    from kafka.structs import TopicPartition

    options = {
        **settings.kafka.client_options(),
        "request_timeout_ms": 5000,
        "bootstrap_timeout_ms": 5000,
    }
    try:
        admin = KafkaAdminClient(client_id="liverank-status", **options)
        try:
            group = consumer_group(settings)
            committed = admin.list_group_offsets({group: None}).get(group, {})
        finally:
            admin.close()
        consumer = KafkaConsumer(client_id="liverank-status", **options)
        try:
            topics = [*USER_SOURCES, "anchor-status"]
            tps = [
                TopicPartition(settings.topic(t), p)
                for t in topics
                for p in range(settings.kafka.partitions)
            ]
            ends = consumer.end_offsets(tps)
        finally:
            consumer.close()
    except Exception as exc:  # kafka-python raises many kinds; status reports, never fails
        return {"error": f"{type(exc).__name__}: {exc}"}
    by_partition: dict[str, int] = {}
    by_topic: dict[str, int] = {}
    for tp in tps:
        done = committed.get(tp)
        offset = done.offset if done is not None and done.offset >= 0 else 0
        lag = max(0, int(ends[tp]) - offset)
        topic = tp.topic.removeprefix(settings.kafka.topic_prefix + ".")
        by_topic[topic] = by_topic.get(topic, 0) + lag
        if topic in USER_SOURCES:
            key = str(tp.partition)
            by_partition[key] = by_partition.get(key, 0) + lag
    return {"group": consumer_group(settings), "partitions": by_partition, "topics": by_topic}


def model_status(settings: Settings, now: float) -> dict[str, Any]:
    """LATEST (version, window end, when it was published) and the trainer's state."""
    try:
        store = CheckpointStore(settings.checkpoint_root)
        latest = store.latest()
        history = store.history()
        state = store.trainer_state()
    except Exception as exc:  # an unreachable remote store is reported, not raised
        return {"error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {"latest": None, "last_gate": state.get("last_gate")}
    if latest is not None:
        published = next(
            (h["at"] for h in reversed(history) if h["version"] == latest.version), None
        )
        out["latest"] = {
            "version": latest.version,
            "window_end": parse_version(latest.version)[0],
            "published_at": published,
            "published_seconds_ago": now - published if published is not None else None,
        }
    out["base_version"] = state.get("base_version")
    out["last_window"] = state.get("last_window")
    return out


def scorer_status(settings: Settings) -> dict[str, Any]:
    url = f"http://{settings.scorer.host}:{settings.scorer.port}/v1/model"
    try:
        answer = httpx.get(url, timeout=2)
    except httpx.HTTPError as exc:
        return {"error": f"not reachable at {url} ({type(exc).__name__})"}
    if answer.status_code != 200:
        return {"error": f"{url}: {answer.status_code} {answer.text[:200]}"}
    body = answer.json()
    return {
        "version": body["version"],
        "window_end": (body.get("window") or {}).get("end"),
        "loaded_at": body.get("loaded_at"),
        "refused": body.get("refused"),
    }


def collect(settings: Settings, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    workers = read_stats(settings.home)
    streams = combine_stats(workers) if workers else None
    marks = (
        [p["watermark"] for p in streams["partitions"].values() if p["watermark"] is not None]
        if streams
        else []
    )
    newest_watermark = max(marks) if marks else None
    model = model_status(settings, now)
    latest = model.get("latest") if "error" not in model else None
    if latest and newest_watermark is not None:
        latest["event_age_seconds"] = newest_watermark - latest["window_end"]
    return {
        "at": now,
        "kafka": consumer_lag(settings),
        "streams": None
        if streams is None
        else {
            "workers": streams["workers"],
            "join_rate": streams["join_rate"],
            "pending_samples": streams["pending_samples"],
            "dead_letters": streams["dead_letters"],
            "partitions": streams["partitions"],
            "stats_age_seconds": {
                w.get("worker"): now - w["written_at"] for w in workers if "written_at" in w
            },
        },
        "model": model,
        "scorer": scorer_status(settings),
    }


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if abs(seconds) < 120:
        return f"{seconds:.0f}s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"


def _utc(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def render(status: dict[str, Any]) -> str:
    lines: list[str] = []
    kafka, streams = status["kafka"], status["streams"]
    if "error" in kafka:
        lines.append(f"kafka        unreachable: {kafka['error']}")
    if streams is None:
        lines.append("streams      no worker stats yet (is `liverank streams worker` running?)")
    else:
        rate = streams["join_rate"]
        lines.append(
            f"streams      workers {', '.join(map(str, streams['workers']))}; join rate "
            f"{'-' if rate is None else f'{rate:.4f}'}; pending samples "
            f"{streams['pending_samples']:,d}; dead letters {streams['dead_letters'] or 0}"
        )
    partitions = sorted(
        set((streams or {}).get("partitions", {})) | set(kafka.get("partitions", {})), key=int
    )
    if partitions:
        lines.append("partition    consumer lag   watermark (UTC)       event-time lag")
    for p in partitions:
        facts = (streams or {}).get("partitions", {}).get(p, {})
        lag = kafka.get("partitions", {}).get(p)
        lines.append(
            f"{p:>9s}    {'-' if lag is None else f'{lag:,d}':>12s}   "
            f"{_utc(facts.get('watermark')):20s}  {_when(facts.get('lag_seconds'))}"
        )
    model = status["model"]
    if "error" in model:
        lines.append(f"model        checkpoint store unreachable: {model['error']}")
    elif model["latest"] is None:
        lines.append("model        nothing in LATEST yet (run `liverank train offline` and "
                     "`liverank train warm-restart`)")  # fmt: skip
    else:
        latest = model["latest"]
        lines.append(
            f"model        LATEST {latest['version']} (window end {_utc(latest['window_end'])}; "
            f"published {_when(latest['published_seconds_ago'])} ago; "
            f"{_when(latest.get('event_age_seconds'))} behind the newest watermark)"
        )
    scorer = status["scorer"]
    if "error" in scorer:
        lines.append(f"scorer       {scorer['error']}")
    else:
        lines.append(
            f"scorer       serving {scorer['version']} (loaded {_utc(scorer['loaded_at'])}; "
            f"refused {len(scorer['refused'] or [])} versions)"
        )
    gate = model.get("last_gate") if "error" not in model else None
    if gate:
        verdict = "accepted" if gate["accepted"] else "REFUSED"
        lines.append(
            f"last gate    {verdict} window {gate['window']} at {gate['at']}: {gate['reason']}"
        )
    return "\n".join(lines)
