"""The event contract (DESIGN §3): typed events, one parser per topic, dead-letter records.

A parser takes the raw bytes of a Kafka message and returns either a typed event or an
``Invalid`` with the reason, never raises. IDs are non-empty strings; ``ts`` is event time in
epoch seconds (int or float, finite); unknown extra fields are ignored so producers can add
fields without breaking workers.

>>> parse_event("clicks", b'{"event_id":"e1","ts":1.5,"request_id":"r","user_id":"u",'
...                       b'"anchor_id":"a"}')
Click(event_id='e1', ts=1.5, request_id='r', user_id='u', anchor_id='a')
>>> parse_event("clicks", b'{"event_id":"e1","ts":NaN}').reason
"field 'ts' must be a finite number, got nan"
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

INPUT_TOPICS: Final = ("impressions", "clicks", "watch", "actions", "anchor-status")
"""Input topics (without the prefix). All but anchor-status are keyed by user_id."""

OUTPUT_TOPICS: Final = ("samples", "deadletter", "model-updates", "control")
INTERNAL_TOPICS: Final = ("anchor-activity",)
"""Between the workers' user side and anchor side (keyed by anchor_id); not a contract."""
ACTIONS: Final = frozenset({"follow", "gift", "comment", "share"})
MAX_ID_LENGTH: Final = 256
DEAD_LETTER_RAW_LIMIT: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Impression:
    event_id: str
    ts: float
    request_id: str
    user_id: str
    anchor_id: str
    scene: str
    position: int


@dataclass(frozen=True, slots=True)
class Click:
    event_id: str
    ts: float
    request_id: str
    user_id: str
    anchor_id: str


@dataclass(frozen=True, slots=True)
class Watch:
    event_id: str
    ts: float
    request_id: str
    user_id: str
    anchor_id: str
    seconds: float
    screen_on: bool


@dataclass(frozen=True, slots=True)
class Action:
    event_id: str
    ts: float
    request_id: str
    user_id: str
    anchor_id: str
    action: str
    value: float | None = None


@dataclass(frozen=True, slots=True)
class AnchorStatus:
    event_id: str
    ts: float
    anchor_id: str
    live: bool
    status: str
    category: str
    viewers: int


Event = Impression | Click | Watch | Action | AnchorStatus


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a message is not a valid event (goes to the dead-letter topic)."""

    reason: str


# -- field checks: each returns the clean value or raises ValueError with the reason ----------


def _identifier(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"field '{name}' must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"field '{name}' must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"field '{name}' is longer than {MAX_ID_LENGTH} characters")
    return value


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"field '{name}' must be a string, got {type(value).__name__}")
    return value


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"field '{name}' must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"field '{name}' must be a finite number, got {value}")
    return number


def _non_negative_number(name: str, value: Any) -> float:
    number = _number(name, value)
    if number < 0:
        raise ValueError(f"field '{name}' must be ≥ 0, got {value}")
    return number


def _non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"field '{name}' must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"field '{name}' must be ≥ 0, got {value}")
    return value


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"field '{name}' must be true or false, got {type(value).__name__}")
    return value


def _action(name: str, value: Any) -> str:
    text = _text(name, value)
    if text not in ACTIONS:
        raise ValueError(f"field '{name}' must be one of {sorted(ACTIONS)}, got {text!r}")
    return text


def _optional_number(name: str, value: Any) -> float | None:
    return None if value is None else _number(name, value)


Check = Callable[[str, Any], Any]
_OPTIONAL: Final = object()  # marks a field that may be missing

_COMMON: Final[list[tuple[str, Check]]] = [("event_id", _identifier), ("ts", _number)]
_USER_KEYED: Final[list[tuple[str, Check]]] = [
    *_COMMON,
    ("request_id", _identifier),
    ("user_id", _identifier),
    ("anchor_id", _identifier),
]

SCHEMAS: Final[dict[str, tuple[type[Any], list[tuple[str, Check]], frozenset[str]]]] = {
    "impressions": (
        Impression,
        [*_USER_KEYED, ("scene", _text), ("position", _non_negative_int)],
        frozenset(),
    ),
    "clicks": (Click, _USER_KEYED, frozenset()),
    "watch": (
        Watch,
        [*_USER_KEYED, ("seconds", _non_negative_number), ("screen_on", _boolean)],
        frozenset(),
    ),
    "actions": (
        Action,
        [*_USER_KEYED, ("action", _action), ("value", _optional_number)],
        frozenset({"value"}),
    ),
    "anchor-status": (
        AnchorStatus,
        [
            *_COMMON,
            ("anchor_id", _identifier),
            ("live", _boolean),
            ("status", _identifier),
            ("category", _text),
            ("viewers", _non_negative_int),
        ],
        frozenset(),
    ),
}
"""topic → (event class, [(field, check)], optional fields)."""


def validate_fields(topic: str, document: Mapping[str, Any]) -> Event:
    """Build the typed event of ``topic`` from a decoded JSON object; ValueError if invalid."""
    try:
        cls, fields, optional = SCHEMAS[topic]
    except KeyError:
        raise ValueError(f"unknown topic {topic!r}; known: {', '.join(INPUT_TOPICS)}") from None
    values: dict[str, Any] = {}
    for name, check in fields:
        if name not in document:
            if name in optional:
                continue
            raise ValueError(f"missing field '{name}'")
        values[name] = check(name, document[name])
    event: Event = cls(**values)
    return event


def parse_event(
    topic: str, raw: bytes | bytearray | memoryview, max_bytes: int = 65536
) -> Event | Invalid:
    """Parse one message of ``topic`` (name without prefix): a typed event or why not."""
    size = len(raw)
    if size > max_bytes:
        return Invalid(f"payload too large: {size} bytes > {max_bytes}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        return Invalid(f"not UTF-8: {exc.reason} at byte {exc.start}")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return Invalid(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        return Invalid("not valid JSON: nested too deeply")
    if not isinstance(document, dict):
        return Invalid(f"not a JSON object but a JSON {type(document).__name__}")
    try:
        return validate_fields(topic, document)
    except ValueError as exc:
        return Invalid(str(exc))


def event_topic(event: Event) -> str:
    """The topic (without prefix) an event belongs to."""
    return _TOPIC_OF[type(event)]


def event_key(event: Event) -> str:
    """The Kafka key: user_id for user-keyed topics, anchor_id for anchor-status."""
    return event.anchor_id if isinstance(event, AnchorStatus) else event.user_id


def event_document(event: Event) -> dict[str, Any]:
    """The event as its JSON object (``value`` left out when it is None)."""
    document = asdict(event)
    if isinstance(event, Action) and event.value is None:
        del document["value"]
    return document


def encode_event(event: Event) -> bytes:
    """Compact UTF-8 JSON, fields in contract order: what producers put on the topic."""
    return encode_document(event_document(event))


def encode_document(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def dead_letter(
    source_topic: str, partition: int, offset: int, error: str, raw: bytes | bytearray | None
) -> dict[str, Any]:
    """The dead-letter record ``{source_topic, partition, offset, error, raw}``.

    ``raw`` is the original message as text (invalid UTF-8 replaced), cut at 64 KiB.

    >>> dead_letter("liverank.clicks", 3, 42, "missing field 'ts'", b'{"event_id":"e1"}')["raw"]
    '{"event_id":"e1"}'
    """
    data = bytes(raw or b"")[:DEAD_LETTER_RAW_LIMIT]
    return {
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "error": error,
        "raw": data.decode("utf-8", errors="replace"),
    }


def reason_kind(reason: str) -> str:
    """A short, low-cardinality label for a reason (for counters), e.g. ``missing_field``.

    >>> reason_kind("missing field 'ts'")
    'missing_field'
    >>> reason_kind("field 'ts' must be a finite number, got nan")
    'bad_value'
    """
    for prefix, kind in _REASON_KINDS:
        if reason.startswith(prefix):
            return kind
    return "bad_value" if reason.startswith("field ") else "other"


_REASON_KINDS: Final = (
    ("missing field", "missing_field"),
    ("payload too large", "too_large"),
    ("not UTF-8", "not_utf8"),
    ("not valid JSON", "not_json"),
    ("not a JSON object", "not_object"),
    ("unknown topic", "unknown_topic"),
    ("bad anchor activity", "bad_activity"),
)

_TOPIC_OF: Final[dict[type[Any], str]] = {cls: topic for topic, (cls, _, _) in SCHEMAS.items()}
