"""The real-time feature store: Redis, laid out so one round trip reads a whole request.

Keys (``ns`` is the deployment's namespace, the topic prefix by default):

- ``<ns>:u:<user_id>``   hash, the user's features;
- ``<ns>:a:<anchor_id>`` hash, the anchor's features;
- ``<ns>:ua:<user_id>``  hash, ``<anchor_id>|<feature>`` for the user×anchor features.

Writes are whole values (``HSET``), never increments, so writing the same state twice leaves
the same values. Every key gets a TTL. ``MemoryFeatureStore`` is the in-memory twin for unit
tests of code that uses a store.
"""

from __future__ import annotations

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


def _encode(values: Values) -> dict[str, str]:
    return {k: v if isinstance(v, str) else repr(float(v)) for k, v in values.items()}


def _assemble(
    user_id: str,
    anchor_ids: Sequence[str],
    user: Mapping[str, float | str] | None,
    anchors: Sequence[Mapping[str, float | str] | None],
    pairs: Mapping[str, float | str],
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
    for anchor_id in anchor_ids:
        merged = dict(defaults("user_anchor"))
        for name in merged:
            value = pairs.get(f"{anchor_id}|{name}")
            if value is not None:
                merged[name] = value
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
            pipe.hset(self.anchor_key(anchor_id), mapping=_encode(values))
            pipe.expire(self.anchor_key(anchor_id), self.ttl)
        touched = set()
        for (user_id, anchor_id), values in batch.user_anchor.items():
            fields = {f"{anchor_id}|{k}": v for k, v in _encode(values).items()}
            pipe.hset(self.pair_key(user_id), mapping=fields)
            touched.add(user_id)
        for user_id in touched:
            pipe.expire(self.pair_key(user_id), self.ttl)
        await pipe.execute()

    async def read(self, user_id: str, anchor_ids: Sequence[str]) -> RequestFeatures:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.user_key(user_id))
        for anchor_id in anchor_ids:
            pipe.hgetall(self.anchor_key(anchor_id))
        names = list(defaults("user_anchor"))
        fields = [f"{a}|{n}" for a in anchor_ids for n in names]
        if fields:
            pipe.hmget(self.pair_key(user_id), fields)
        replies = await pipe.execute()
        user = {k.decode(): _decode(k.decode(), v) for k, v in replies[0].items()}
        anchors = [
            {k.decode(): _decode(k.decode(), v) for k, v in reply.items()}
            for reply in replies[1 : 1 + len(anchor_ids)]
        ]
        pairs: dict[str, float | str] = {}
        if fields:
            for name, raw in zip(fields, replies[-1], strict=True):
                if raw is not None:
                    pairs[name] = _decode(name.split("|", 1)[1], raw)
        return _assemble(user_id, anchor_ids, user, anchors, pairs)

    async def read_anchors(self, anchor_ids: Sequence[str]) -> dict[str, dict[str, float | str]]:
        pipe = self.client.pipeline(transaction=False)
        for anchor_id in anchor_ids:
            pipe.hgetall(self.anchor_key(anchor_id))
        replies = await pipe.execute()
        return {
            anchor_id: {k.decode(): _decode(k.decode(), v) for k, v in reply.items()}
            for anchor_id, reply in zip(anchor_ids, replies, strict=True)
            if reply
        }

    async def close(self) -> None:
        await self.client.aclose()


class MemoryFeatureStore:
    """The in-memory twin of ``RedisFeatureStore`` (no TTLs), for unit tests."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, float | str]] = {}
        self.anchors: dict[str, dict[str, float | str]] = {}
        self.pairs: dict[str, dict[str, float | str]] = {}

    async def write(self, batch: FeatureWrite) -> None:
        for user_id, values in batch.users.items():
            self.users.setdefault(user_id, {}).update(values)
        for anchor_id, values in batch.anchors.items():
            self.anchors.setdefault(anchor_id, {}).update(values)
        for (user_id, anchor_id), values in batch.user_anchor.items():
            fields = self.pairs.setdefault(user_id, {})
            fields.update({f"{anchor_id}|{k}": v for k, v in values.items()})

    async def read(self, user_id: str, anchor_ids: Sequence[str]) -> RequestFeatures:
        anchors = [self.anchors.get(a) for a in anchor_ids]
        return _assemble(
            user_id, anchor_ids, self.users.get(user_id), anchors, self.pairs.get(user_id, {})
        )

    async def read_anchors(self, anchor_ids: Sequence[str]) -> dict[str, dict[str, float | str]]:
        return {a: dict(self.anchors[a]) for a in anchor_ids if a in self.anchors}

    async def close(self) -> None:
        return None
