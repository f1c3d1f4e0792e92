"""The event contract: every topic's parser, field by field, and the dead-letter record."""

from __future__ import annotations

import json
import math

import pytest

from streams.events import (
    DEAD_LETTER_RAW_LIMIT,
    INPUT_TOPICS,
    SCHEMAS,
    Action,
    AnchorStatus,
    Click,
    Impression,
    Invalid,
    Watch,
    dead_letter,
    encode_event,
    event_key,
    event_topic,
    parse_event,
    reason_kind,
)

VALID: dict[str, dict[str, object]] = {
    "impressions": {
        "event_id": "e1",
        "ts": 1793491200.25,
        "request_id": "r1",
        "user_id": "u1",
        "anchor_id": "a1",
        "scene": "home",
        "position": 3,
    },
    "clicks": {
        "event_id": "e2",
        "ts": 1793491201,
        "request_id": "r1",
        "user_id": "u1",
        "anchor_id": "a1",
    },
    "watch": {
        "event_id": "e3",
        "ts": 1793491221.0,
        "request_id": "r1",
        "user_id": "u1",
        "anchor_id": "a1",
        "seconds": 20.0,
        "screen_on": False,
    },
    "actions": {
        "event_id": "e4",
        "ts": 1793491230.5,
        "request_id": "r1",
        "user_id": "u1",
        "anchor_id": "a1",
        "action": "gift",
        "value": 52.0,
    },
    "anchor-status": {
        "event_id": "e5",
        "ts": 1793491100.0,
        "anchor_id": "a1",
        "live": True,
        "status": "pk",
        "category": "music",
        "viewers": 120,
    },
}
CLASSES = {
    "impressions": Impression,
    "clicks": Click,
    "watch": Watch,
    "actions": Action,
    "anchor-status": AnchorStatus,
}


def raw(document: object) -> bytes:
    return json.dumps(document).encode()


def test_every_input_topic_has_a_schema_and_an_example() -> None:
    assert set(SCHEMAS) == set(INPUT_TOPICS) == set(VALID)


@pytest.mark.parametrize("topic", INPUT_TOPICS)
def test_valid_events_round_trip(topic: str) -> None:
    event = parse_event(topic, raw(VALID[topic]))
    assert isinstance(event, CLASSES[topic])
    assert event_topic(event) == topic
    assert json.loads(encode_event(event)) == {
        k: float(v) if k == "ts" else v for k, v in VALID[topic].items()
    }
    assert parse_event(topic, encode_event(event)) == event


@pytest.mark.parametrize(
    ("topic", "field"),
    [
        (t, name)
        for t, (_, fields, optional) in SCHEMAS.items()
        for name, _ in fields
        if name not in optional
    ],
)
def test_every_required_field_missing_is_named(topic: str, field: str) -> None:
    document = dict(VALID[topic])
    del document[field]
    result = parse_event(topic, raw(document))
    assert result == Invalid(f"missing field '{field}'")
    assert reason_kind(result.reason) == "missing_field"


def test_optional_value_may_be_missing_or_null() -> None:
    document = {k: v for k, v in VALID["actions"].items() if k != "value"}
    missing = parse_event("actions", raw(document))
    null = parse_event("actions", raw({**document, "value": None}))
    assert isinstance(missing, Action) and missing.value is None
    assert null == missing
    assert b"value" not in encode_event(missing)


@pytest.mark.parametrize(
    ("topic", "field", "value", "reason"),
    [
        ("clicks", "ts", "1793491200", "field 'ts' must be a number, got str"),
        ("clicks", "ts", True, "field 'ts' must be a number, got bool"),
        ("clicks", "ts", None, "field 'ts' must be a number, got NoneType"),
        ("clicks", "user_id", 17, "field 'user_id' must be a string, got int"),
        ("clicks", "user_id", "", "field 'user_id' must not be empty"),
        ("clicks", "anchor_id", "a" * 300, "field 'anchor_id' is longer than 256 characters"),
        ("clicks", "event_id", ["e"], "field 'event_id' must be a string, got list"),
        ("impressions", "position", -1, "field 'position' must be ≥ 0, got -1"),
        ("impressions", "position", 1.5, "field 'position' must be an integer, got float"),
        ("impressions", "position", True, "field 'position' must be an integer, got bool"),
        ("impressions", "scene", 3, "field 'scene' must be a string, got int"),
        ("watch", "seconds", -0.5, "field 'seconds' must be ≥ 0, got -0.5"),
        ("watch", "seconds", "20", "field 'seconds' must be a number, got str"),
        ("watch", "screen_on", 1, "field 'screen_on' must be true or false, got int"),
        ("watch", "screen_on", "true", "field 'screen_on' must be true or false, got str"),
        (
            "actions",
            "action",
            "like",
            "field 'action' must be one of ['comment', 'follow', 'gift', 'share'], got 'like'",
        ),
        ("actions", "value", "5", "field 'value' must be a number, got str"),
        ("anchor-status", "live", "yes", "field 'live' must be true or false, got str"),
        ("anchor-status", "viewers", -3, "field 'viewers' must be ≥ 0, got -3"),
        ("anchor-status", "viewers", 2.5, "field 'viewers' must be an integer, got float"),
        ("anchor-status", "status", "", "field 'status' must not be empty"),
    ],
)
def test_wrong_types_and_values_give_the_reason(
    topic: str, field: str, value: object, reason: str
) -> None:
    result = parse_event(topic, raw({**VALID[topic], field: value}))
    assert result == Invalid(reason)
    assert reason_kind(reason) == "bad_value"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
@pytest.mark.parametrize("topic", INPUT_TOPICS)
def test_ts_must_be_finite(topic: str, literal: bytes) -> None:
    body = raw({**VALID[topic], "ts": 0}).replace(b'"ts": 0', b'"ts": ' + literal)
    result = parse_event(topic, body)
    assert isinstance(result, Invalid)
    assert result.reason.startswith("field 'ts' must be a finite number")


def test_non_finite_watch_seconds_are_refused() -> None:
    body = raw({**VALID["watch"], "seconds": 0}).replace(b'"seconds": 0', b'"seconds": NaN')
    assert parse_event("watch", body) == Invalid("field 'seconds' must be a finite number, got nan")


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"", "not_json"),
        (b"{not json", "not_json"),
        (b'{"event_id": "e1",', "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"just a string"', "not_object"),
        (b"null", "not_object"),
        (b"\xff\xfe{}", "not_utf8"),
        (b"[" * 100_000 + b"]" * 100_000, "too_large"),
    ],
)
def test_malformed_payloads_give_a_reason(body: bytes, kind: str) -> None:
    result = parse_event("clicks", body, max_bytes=65536)
    assert isinstance(result, Invalid)
    assert reason_kind(result.reason) == kind, result.reason


def test_oversized_payload_names_its_size() -> None:
    body = raw({**VALID["clicks"], "padding": "x" * 70_000})
    result = parse_event("clicks", body, max_bytes=65536)
    assert result == Invalid(f"payload too large: {len(body)} bytes > 65536")
    assert isinstance(parse_event("clicks", body, max_bytes=1 << 20), Click)


def test_deeply_nested_json_is_a_reason_not_a_crash() -> None:
    body = b"[" * 50_000 + b"]" * 50_000
    result = parse_event("clicks", body, max_bytes=1 << 20)
    assert isinstance(result, Invalid)


def test_unknown_topic_is_a_reason() -> None:
    result = parse_event("likes", raw(VALID["clicks"]))
    assert isinstance(result, Invalid)
    assert reason_kind(result.reason) == "unknown_topic"


def test_extra_fields_are_ignored() -> None:
    event = parse_event("clicks", raw({**VALID["clicks"], "app_version": "9.1"}))
    assert isinstance(event, Click)


def test_keys_follow_the_contract() -> None:
    for topic in INPUT_TOPICS:
        event = parse_event(topic, raw(VALID[topic]))
        assert not isinstance(event, Invalid)
        assert event_key(event) == ("a1" if topic == "anchor-status" else "u1")


def test_dead_letter_record_has_the_contract_fields_and_cuts_raw() -> None:
    body = b"\xff" + b"y" * (DEAD_LETTER_RAW_LIMIT + 500)
    record = dead_letter("liverank.watch", 2, 1234, "not UTF-8", body)
    assert set(record) == {"source_topic", "partition", "offset", "error", "raw"}
    assert record["source_topic"] == "liverank.watch"
    assert (record["partition"], record["offset"]) == (2, 1234)
    assert record["raw"][0] == "\ufffd"
    assert len(record["raw"]) == DEAD_LETTER_RAW_LIMIT
    assert json.loads(json.dumps(record)) == record


def test_integer_ts_is_accepted_as_float() -> None:
    event = parse_event("clicks", raw(VALID["clicks"]))
    assert isinstance(event, Click) and event.ts == 1793491201.0 and isinstance(event.ts, float)
    assert math.isfinite(event.ts)
