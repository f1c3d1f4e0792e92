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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import hiredis
import orjson
import redis.asyncio as aioredis

from features.catalog import CATALOG_BY_NAME

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
    """What a request reads, as stored: the user's features, and each candidate's and each
    pair's in the order of the anchor IDs asked for (``None`` where nothing is stored).
    Defaults are filled in later, once, by ``features.request.request_rows``."""

    user: dict[str, float | str]
    anchors: list[dict[str, float | str] | None]
    user_anchor: list[dict[str, float | str] | None]


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


def _encode_json(values: Values) -> bytes:
    return orjson.dumps({k: v if isinstance(v, str) else float(v) for k, v in values.items()})


def _decode_json(raw: bytes | None) -> dict[str, float | str] | None:
    return None if raw is None else dict(orjson.loads(raw))


class HiredisPackingConnection(aioredis.Connection):
    """redis-py's asyncio connection packs commands in Python: 0.16 ms for the ``MGET`` of a
    request's 200 keys, twice a request. hiredis packs the same bytes in C (0.014 ms)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0]
        if isinstance(head, str):
            head = head.encode()
        if isinstance(head, bytes) and b" " in head:  # "CLIENT SETINFO" goes as two words
            args = (*head.split(), *args[1:])
        return [hiredis.pack_command(args)]


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
        client = aioredis.Redis.from_url(
            url, password=password, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        pool = client.connection_pool
        if pool.connection_class is aioredis.Connection:  # plain TCP (not TLS, not a socket)
            pool.connection_class = HiredisPackingConnection
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
        pairs: dict[str, dict[str, bytes]] = {}
        for (user_id, anchor_id), values in batch.user_anchor.items():
            pairs.setdefault(user_id, {})[anchor_id] = _encode_json(values)
        for user_id, fields in pairs.items():
            pipe.hset(self.pair_key(user_id), mapping=fields)
            pipe.expire(self.pair_key(user_id), self.ttl)
        await pipe.execute()

    async def read(self, user_id: str, anchor_ids: Sequence[str]) -> RequestFeatures:
        if not anchor_ids:
            user = await self.client.hgetall(self.user_key(user_id))
            return RequestFeatures(_decode_hash(user), [], [])
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.user_key(user_id))
        pipe.mget([self.anchor_key(a) for a in anchor_ids])
        pipe.hmget(self.pair_key(user_id), anchor_ids)
        user, anchors, pairs = await pipe.execute()
        return RequestFeatures(
            _decode_hash(user), [_decode_json(a) for a in anchors], [_decode_json(p) for p in pairs]
        )

    async def read_anchors(self, anchor_ids: Sequence[str]) -> dict[str, dict[str, float | str]]:
        if not anchor_ids:
            return {}
        replies = await self.client.mget([self.anchor_key(a) for a in anchor_ids])
        return {
            anchor_id: values
            for anchor_id, reply in zip(anchor_ids, replies, strict=True)
            if (values := _decode_json(reply)) is not None
        }

    async def close(self) -> None:
        await self.client.aclose()


def _copy(values: Mapping[str, float | str] | None) -> dict[str, float | str] | None:
    return None if values is None else dict(values)


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
        return RequestFeatures(
            dict(self.users.get(user_id, {})),
            [_copy(self.anchors.get(a)) for a in anchor_ids],
            [_copy(pairs.get(a)) for a in anchor_ids],
        )

    async def read_anchors(self, anchor_ids: Sequence[str]) -> dict[str, dict[str, float | str]]:
        return {a: dict(self.anchors[a]) for a in anchor_ids if a in self.anchors}

    async def close(self) -> None:
        return None
