"""The real-time feature store: Redis, laid out so one round trip reads a whole request.

Keys (``ns`` is the deployment's namespace, the topic prefix by default):

- ``<ns>:u:<user_id>``   hash, the user's features;
- ``<ns>:a:<anchor_id>`` string, the anchor's features as a JSON object (so a request reads
  all its candidates with one ``MGET``, not one ``HGETALL`` each);
- ``<ns>:ua:<user_id>``  hash, field ``<anchor_id>``: that pair's features as a JSON object
  (one ``HMGET`` of the candidates reads them).

A request is three commands in one pipelined round trip. Writes are whole values (``HSET``,
``SET``), never increments, so writing the same state twice leaves the same values. Every key
gets a TTL. ``MemoryFeatureStore`` is the in-memory twin for unit
tests of code that uses a store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from features.catalog import CATALOG_BY_NAME, defaults

Values = Mapping[str, float | str]


@dataclass
class FeatureWrite:
    """Everything one batch writes."""

    users: Mapping[str, Values] = field(default_factory=dict)
    anchors: Mapping[str, Values] = field(default_factory=dict)
    user_anchor: Mapping[tuple[str, str], Values] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.users or self.anchors or self.user_anchor)


@dataclass(frozen=True)
class RequestFeatures:
    """What a request reads: the user's, each candidate's and each pair's features."""

    user: dict[str, float | str]
    anchors: dict[str, dict[str, float | str]]
    user_anchor: dict[str, dict[str, float | str]]
    missing_user: bool
    missing_anchors: tuple[str, ...]


class FeatureStore(Protocol):
    async def write(self, batch: FeatureWrite) -> None: ...

    async def read(self, user_id: str, anchor_ids: Sequence[str]) -> RequestFeatures: ...

    async def read_anchors(self, anchor_ids: Sequence[str]) -> dict[str, dict[str, float | str]]:
        """The stored features of the anchors that have any (no defaults filled in)."""
        ...

    async def close(self) -> None: ...


def _decode(name: str, raw: bytes | str) -> float | str:
    text = raw.decode() if isinstance(raw, bytes) else raw
    feature = CATALOG_BY_NAME.get(name)
    if feature is None or feature.kind != "numeric":
        return text
    return float(text)


def _decode_hash(reply: Mapping[bytes, bytes]) -> dict[str, float | str]:
    return {k.decode(): _decode(k.decode(), v) for k, v in reply.items()}


def _encode(values: Values) -> dict[str, str]:
    return {k: v if isinstance(v, str) else repr(float(v)) for k, v in values.items()}


def _encode_json(values: Values) -> str:
    return json.dumps(
        {k: v if isinstance(v, str) else float(v) for k, v in values.items()},
        separators=(",", ":"),
    )


def _decode_json(raw: bytes | None) -> dict[str, float | str]:
    return {} if raw is None else dict(json.loads(raw))


def _assemble(
    user_id: str,
    anchor_ids: Sequence[str],
    user: Mapping[str, float | str] | None,
    anchors: Sequence[Mapping[str, float | str] | None],
    pairs: Sequence[Mapping[str, float | str] | None],
) -> RequestFeatures:
    user_values = dict(defaults("user"))
    user_values.update(user or {})
    anchor_values: dict[str, dict[str, float | str]] = {}
    missing = []
    for anchor_id, values in zip(anchor_ids, anchors, strict=True):
        merged = dict(defaults("anchor"))
        if values:
            merged.update(values)
        else:
            missing.append(anchor_id)
        anchor_values[anchor_id] = merged
    pair_values: dict[str, dict[str, float | str]] = {}
    for anchor_id, values in zip(anchor_ids, pairs, strict=True):
        merged = dict(defaults("user_anchor"))
        merged.update(values or {})
        pair_values[anchor_id] = merged
    return RequestFeatures(
        user=user_values,
        anchors=anchor_values,
        user_anchor=pair_values,
        missing_user=not user,
        missing_anchors=tuple(missing),
    )


class RedisFeatureStore:
    """The store on Redis (asyncio client, pipelined)."""

    def __init__(self, client: Any, namespace: str, ttl_seconds: int) -> None:
        self.client = client
        self.ns = namespace
        self.ttl = ttl_seconds

    @classmethod
    def from_url(
        cls,
        url: str,
        namespace: str,
        ttl_seconds: int,
        timeout: float = 0.5,
        password: str | None = None,
    ) -> RedisFeatureStore:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(
            url, password=password, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        return cls(client, namespace, ttl_seconds)

    def user_key(self, user_id: str) -> str:
        return f"{self.ns}:u:{user_id}"

    def anchor_key(self, anchor_id: str) -> str:
        return f"{self.ns}:a:{anchor_id}"

    def pair_key(self, user_id: str) -> str:
        return f"{self.ns}:ua:{user_id}"

    async def write(self, batch: FeatureWrite) -> None:
        if not batch:
            return
        pipe = self.client.pipeline(transaction=False)
        for user_id, values in batch.users.items():
            pipe.hset(self.user_key(user_id), mapping=_encode(values))
            pipe.expire(self.user_key(user_id), self.ttl)
        for anchor_id, values in batch.anchors.items():
            pipe.set(self.anchor_key(anchor_id), _encode_json(values), ex=self.ttl)
        pairs: dict[str, dict[str, str]] = {}
        for (user_id, anchor_id), values in batch.user_anchor.items():
            pairs.setdefault(user_id, {})[anchor_id] = _encode_json(values)
        for user_id, fields in pairs.items():
            pipe.hset(self.pair_key(user_id), mapping=fields)
            pipe.expire(self.pair_key(user_id), self.ttl)
        await pipe.execute()

    async def read(self, user_id: str, anchor_ids: Sequence[str]) -> RequestFeatures:
        if not anchor_ids:
            user = await self.client.hgetall(self.user_key(user_id))
            return _assemble(user_id, anchor_ids, _decode_hash(user), [], [])
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.user_key(user_id))
        pipe.mget([self.anchor_key(a) for a in anchor_ids])
        pipe.hmget(self.pair_key(user_id), anchor_ids)
        user, anchors, pairs = await pipe.execute()
        return _assemble(
            user_id,
            anchor_ids,
            _decode_hash(user),
            [_decode_json(a) for a in anchors],
            [_decode_json(p) for p in pairs],
        )

    async def read_anchors(self, anchor_ids: Sequence[str]) -> dict[str, dict[str, float | str]]:
        if not anchor_ids:
            return {}
        replies = await self.client.mget([self.anchor_key(a) for a in anchor_ids])
        return {
            anchor_id: _decode_json(reply)
            for anchor_id, reply in zip(anchor_ids, replies, strict=True)
            if reply is not None
        }

    async def close(self) -> None:
        await self.client.aclose()


class MemoryFeatureStore:
    """The in-memory twin of ``RedisFeatureStore`` (no TTLs), for unit tests."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, float | str]] = {}
        self.anchors: dict[str, dict[str, float | str]] = {}
        self.pairs: dict[str, dict[str, dict[str, float | str]]] = {}

    async def write(self, batch: FeatureWrite) -> None:
        # As in Redis: a user's fields are updated, an anchor's and a pair's values replaced.
        for user_id, values in batch.users.items():
            self.users.setdefault(user_id, {}).update(values)
        for anchor_id, values in batch.anchors.items():
            self.anchors[anchor_id] = dict(values)
        for (user_id, anchor_id), values in batch.user_anchor.items():
            self.pairs.setdefault(user_id, {})[anchor_id] = dict(values)

    async def read(self, user_id: str, anchor_ids: Sequence[str]) -> RequestFeatures:
        pairs = self.pairs.get(user_id, {})
        return _assemble(
            user_id,
            anchor_ids,
            self.users.get(user_id),
            [self.anchors.get(a) for a in anchor_ids],
            [pairs.get(a) for a in anchor_ids],
        )

    async def read_anchors(self, anchor_ids: Sequence[str]) -> dict[str, dict[str, float | str]]:
        return {a: dict(self.anchors[a]) for a in anchor_ids if a in self.anchors}

    async def close(self) -> None:
        return None
