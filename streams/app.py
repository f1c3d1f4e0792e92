"""The faust app: thin shells around ``streams.pipeline``, built by ``create_app(settings)``.

Two agents, both reading in batches:

- the user agent reads impressions, clicks, watch, actions (co-partitioned by user_id) and the
  control topic; it computes features and labels, then makes the batch's outputs durable —
  samples landed as Parquet and sent to ``<prefix>.samples``, dead letters, anchor activity,
  Redis features — and only then commits the state to its tables;
- the anchor agent reads anchor-status and anchor activity (keyed by anchor_id) and keeps the
  anchor features in Redis.

Everything a rule decides lives in ``streams.pipeline`` and below; this module moves bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from features.hbase import HBaseTables
from features.profiles import CachedProfiles, HBaseProfileStore
from features.store import FeatureWrite, RedisFeatureStore
from liverank.settings import Settings
from snapshots.samples import SampleLander, document_row
from snapshots.store import HBaseSnapshotStore
from streams.events import Impression, encode_document
from streams.join import LabelRules
from streams.metrics import StreamMetrics
from streams.pipeline import (
    USER_SOURCES,
    AnchorSide,
    Highwater,
    Lookups,
    Message,
    UserSide,
    land_batch,
    sample_document,
)
from streams.topics import consumer_group

log = logging.getLogger("liverank.streams")


class FaustTableMapping(MutableMapping[str, Any]):
    """A faust table written from a batch (outside one event's context).

    Keys start with their partition (``<partition>/...``); a write goes to the store at once
    and, serialized as faust serializes it, to that partition of the changelog when the batch
    calls ``drain`` (below), which waits until every changelog write was acknowledged: faust's
    own flush before an offset commit gives up after 0.1 s without progress, so a batch is
    acknowledged (and its offsets become committable) only after ``drain``. The writes go
    straight to the app's producer: through faust's ``send_changelog`` (a future, a buffer and
    a callback per message; the callback keeps offsets only for stores on disk) draining a
    replayed day's batches took 3.1 s in ``bench/streams.py``, 1.1 s now.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self.unsent: list[tuple[int, bytes, bytes | None, Any]] = []

    async def send(self) -> list[Any]:
        """Send the writes not sent yet; the futures of their acknowledgements."""
        unsent, self.unsent = self.unsent, []
        producer = self.table.app.producer
        topic = self.table.changelog_topic.get_topic_name()
        return [
            await producer.send(topic, key, value, partition, None, headers or None)
            for partition, key, value, headers in unsent
        ]

    def _changelog(self, key: str, value: Any, value_serializer: str | None = None) -> None:
        topic, table = self.table.changelog_topic, self.table
        key_bytes, headers = topic.prepare_key(key, table.key_serializer, None, {})
        value_bytes, headers = topic.prepare_value(
            value, value_serializer or table.value_serializer, None, headers
        )
        self.unsent.append((int(key.split("/", 1)[0]), key_bytes, value_bytes, headers))

    def __getitem__(self, key: str) -> Any:
        value = self.table.data.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.table.data[key] = value
        self._changelog(key, value)

    def __delitem__(self, key: str) -> None:
        self.table.data.pop(key, None)
        self._changelog(key, None, value_serializer="raw")

    def __contains__(self, key: object) -> bool:
        return key in self.table.data

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.table.data.keys()))

    def __len__(self) -> int:
        return len(self.table.data)


async def drain(mappings: Iterable[FaustTableMapping]) -> None:
    """Send the tables' changelog writes, all in flight together, and wait until every one
    was acknowledged."""
    acks = [ack for mapping in mappings for ack in await mapping.send()]
    if acks:
        await asyncio.gather(*acks)


def label_rules(settings: Settings) -> LabelRules:
    return LabelRules.from_settings(settings.labels)


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _broker(settings: Settings) -> tuple[list[str], dict[str, Any]]:
    kafka = settings.kafka
    servers = [f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",")]
    extra: dict[str, Any] = {}
    if kafka.sasl_mechanism:
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        ssl_context = None
        if kafka.security_protocol == "SASL_SSL":
            import ssl

            ssl_context = ssl.create_default_context(
                cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None
            )
        extra["broker_credentials"] = faust.SASLCredentials(
            username=kafka.sasl_username or "",
            password=password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=ssl_context,
        )
    elif kafka.security_protocol == "SSL":
        import ssl

        extra["broker_credentials"] = ssl.create_default_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None
        )
    return servers, extra


class StreamRuntime:
    """The I/O around the pipeline for one worker process."""

    def __init__(self, settings: Settings, app: faust.App, name: str) -> None:
        self.settings = settings
        self.app = app
        self.name = name
        self.rules = label_rules(settings)
        prefix = settings.kafka.topic_prefix
        self.max_bytes = settings.kafka.max_event_bytes
        self.metrics = StreamMetrics()
        self.redis = RedisFeatureStore.from_url(
            settings.redis.url,
            namespace=prefix,
            ttl_seconds=settings.redis.feature_ttl_seconds,
            timeout=max(settings.redis.socket_timeout_seconds, 2.0),
            password=settings.redis.password.get_secret_value()
            if settings.redis.password
            else None,
        )
        hbase = HBaseTables(
            settings.hbase.thrift_host,
            settings.hbase.thrift_port,
            settings.hbase.table_prefix,
            settings.hbase.timeout_ms,
        )
        self.snapshots = HBaseSnapshotStore(hbase, settings.hbase.snapshot_ttl_seconds)
        self.profiles = CachedProfiles(
            HBaseProfileStore(hbase), settings.hbase.profile_cache_seconds
        )
        self.lander = SampleLander(
            settings.samples_root,
            settings.kafka.partitions,
            self.rules.click_window,
            self.rules.horizon,
            log=self.topic_of("samples"),
        )
        self.recovered: set[int] = set()  # partitions whose samples were read back here
        self.samples_read_back = 0
        self.batch_lock = asyncio.Lock()
        self.user_side: UserSide | None = None
        self.anchor_side: AnchorSide | None = None
        self.stats_path = Path(settings.home) / "streams" / f"{name}.json"
        self._last_stats = 0.0

    def topic_of(self, name: str) -> str:
        return self.settings.topic(name)

    async def _send(
        self, name: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> Any:
        """Queue one message for the output topic ``name``; returns the future of its
        acknowledgement (the record's metadata). Straight to the app's producer (faust's
        aiokafka driver): a ``faust.Topic.send`` (its own future, sensors and callbacks around
        the same producer) took ~145 µs a message in a worker, the producer ~20."""
        topic = self.topic_of(name)
        return await self.app.producer.send(topic, key, value, partition, None, None)

    async def _recover(self, partitions: Iterable[int]) -> None:
        """Before a partition's first batch here: read back from ``<prefix>.samples`` the
        samples its last owner (this worker before a crash, or another) sent but may not
        have written to window files (see ``SampleLander.land``)."""
        for partition in sorted(set(partitions) - self.recovered):
            read = await self._retry(
                lambda p=partition: asyncio.to_thread(self._read_back, p), "samples read-back"
            )
            self.recovered.add(partition)
            self.samples_read_back += read
            if read:
                log.info("partition %d: read back %d samples to land", partition, read)

    def _read_back(self, partition: int, stall_seconds: float = 60.0) -> int:
        """Read ``<prefix>.samples`` partition ``partition`` from where its files end to the
        end of the log, into the lander; returns how many samples were read. Raises when the
        log stops giving records for ``stall_seconds`` short of its end (the caller retries).
        """
        from kafka import KafkaConsumer, TopicPartition

        start = self.lander.resume_offset(partition)
        tp = TopicPartition(self.topic_of("samples"), partition)
        consumer = KafkaConsumer(enable_auto_commit=False, **self.settings.kafka.client_options())
        try:
            consumer.assign([tp])
            first = consumer.beginning_offsets([tp])[tp]
            end = consumer.end_offsets([tp])[tp]
            if start > end:  # the topic is younger than the record: it was made again
                log.warning("%s[%d] ends at %d, before %d: reading it whole", *tp, end, start)
                start = first
            elif start < first:
                log.error("%s[%d]: offsets %d-%d expired before they landed", *tp, start, first)
                self.metrics.degraded.labels("samples_expired").inc(first - start)
                start = first
            consumer.seek(tp, start)
            entries: list[tuple[int, Any]] = []
            stalled = time.monotonic() + stall_seconds
            while consumer.position(tp) < end:
                if time.monotonic() > stalled:
                    raise TimeoutError(f"{tp.topic}[{partition}] gave nothing for {stall_seconds}s")
                for record in consumer.poll(timeout_ms=1000).get(tp, []):
                    stalled = time.monotonic() + stall_seconds
                    if record.offset >= end:
                        continue
                    try:
                        entries.append((record.offset, document_row(json.loads(record.value))))
                    except (ValueError, TypeError, KeyError) as exc:  # not a sample we sent
                        log.error("%s[%d]@%d is no sample: %s", *tp, record.offset, exc)
                        self.metrics.degraded.labels("samples_unreadable").inc()
        finally:
            consumer.close()
        return self.lander.recover(partition, entries, end)

    # -- the user agent ------------------------------------------------------------------------

    def bind_user_tables(self, tables: dict[str, Any]) -> None:
        self.user_tables = {name: FaustTableMapping(table) for name, table in tables.items()}
        self.user_side = UserSide(
            self.rules,
            self.user_tables,
            topic_of=self.topic_of,
            max_event_bytes=self.max_bytes,
        )

    def bind_anchor_table(self, table: Any) -> None:
        self.anchor_table = FaustTableMapping(table)
        self.anchor_side = AnchorSide(
            self.anchor_table, topic_of=self.topic_of, max_event_bytes=self.max_bytes
        )

    def _messages(self, events: Sequence[Any]) -> list[Message]:
        prefix = self.settings.kafka.topic_prefix + "."
        out = []
        for event in events:
            m = event.message
            out.append(Message(m.topic.removeprefix(prefix), m.partition, m.offset, m.key, m.value))
        return out

    async def _lookups(self, impressions: Sequence[Impression]) -> Lookups:
        if not impressions:
            return Lookups(snapshots={}, anchors={}, user_profiles={}, anchor_profiles={})
        request_ids = list({i.request_id for i in impressions})
        anchor_ids = list({i.anchor_id for i in impressions})
        user_ids = list({i.user_id for i in impressions})
        snapshots = await self._hbase(lambda: self.snapshots.get(request_ids), {}, "snapshots")
        # Each kind in one read of the misses (a read per user had cost a replayed day's
        # batches 2.8 s of ~15 in HBase round trips).
        user_profiles = await self._hbase(
            lambda: self.profiles.features("user", user_ids), {}, "profiles"
        )
        anchor_profiles = await self._hbase(
            lambda: self.profiles.features("anchor", anchor_ids), {}, "profiles"
        )
        anchors = await self._redis_anchor_features(anchor_ids)
        return Lookups(
            snapshots=snapshots,
            anchors=anchors,
            user_profiles=user_profiles,
            anchor_profiles=anchor_profiles,
        )

    def _fetched_end(self, source: str, partition: int) -> int | None:
        """The end of a source partition's log as of the consumer's last fetch (None: unknown).
        Never past the log's true end, so a source read short of it is surely behind."""
        try:
            end = self.app.consumer.highwater(TP(self.topic_of(source), partition))
        except Exception:  # not assigned here (any more) or no fetch yet
            return None
        return None if end is None else int(end)

    async def _log_ends(self, partitions: Sequence[int]) -> Highwater:
        """Where each source partition's log ends right now, for ``partitions`` (unknown:
        None, and nothing is released as caught up).

        Asked of the brokers (one ListOffsets), not taken from the consumer's last fetch:
        that highwater can be older than events already read from the other topics, and a
        worker trusting it released impressions before clicks that were already in the log.
        """
        tps = [TP(self.topic_of(s), p) for p in partitions for s in USER_SOURCES]
        ends: dict[tuple[str, int], int] = {}
        if tps:
            try:
                found = await self.app.consumer.highwaters(*tps)
            except Exception as exc:  # not assigned here (any more), or the broker is away
                log.debug("log ends unknown, holding to the slowest source: %s", exc)
                found = {}
            topics = {self.topic_of(s): s for s in USER_SOURCES}
            ends = {(topics[tp.topic], tp.partition): int(end) for tp, end in found.items()}
        return lambda source, partition: ends.get((source, partition))

    async def _hbase(self, call: Any, fallback: Any, what: str) -> Any:
        for attempt in range(3):
            try:
                return await asyncio.to_thread(call)
            except Exception as exc:  # the stores drop a broken connection themselves
                log.warning("HBase %s read failed (attempt %d): %s", what, attempt + 1, exc)
                await asyncio.sleep(0.5 * (attempt + 1))
        self.metrics.degraded.labels(what).inc()
        return fallback

    async def _redis_anchor_features(
        self, anchor_ids: list[str]
    ) -> dict[str, dict[str, float | str]]:
        result: dict[str, dict[str, float | str]] = await self._retry(
            lambda: self.redis.read_anchors(anchor_ids), "redis read"
        )
        return result

    async def _retry(self, call: Any, what: str) -> Any:
        """Redis and Kafka outputs are retried until they succeed: a batch is never half done."""
        delay = 0.2
        while True:
            try:
                return await call()
            except Exception as exc:
                log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
                self.metrics.retries.labels(what).inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def handle_user_batch(self, events: Sequence[Any]) -> None:
        # A batch runs whole or not at all with respect to rebalances: revocation waits for it
        # (see ``revoke``), so faust never restores a table under a half-written batch.
        async with self.batch_lock:
            await self._user_batch(events)

    async def handle_anchor_batch(self, events: Sequence[Any]) -> None:
        async with self.batch_lock:
            await self._anchor_batch(events)

    async def _user_batch(self, events: Sequence[Any]) -> None:
        assert self.user_side is not None
        if not events:
            return
        messages = self._messages(events)
        await self._recover(m.partition for m in messages)
        side = self.user_side
        side.hold(messages)
        # Only partitions that look read to their end by the last fetch are asked about (a
        # backlog asks nothing); the brokers' answer decides.
        impressions = side.release(await self._log_ends(side.at_end(self._fetched_end)))
        batch = self.user_side.apply(await self._lookups(impressions))
        # 1. Outputs, made durable. A crash before the commit below repeats the batch; every
        #    output here is idempotent (files rewritten, versions deduplicated, HSET values).
        #    Samples go to the partition of the events they came from: that partition of
        #    ``<prefix>.samples`` is the lander's log (see ``SampleLander.land``).
        logged: dict[int, list[Any]] = {}
        for partition, samples in batch.samples.items():
            logged[partition] = [
                await self._send("samples", sample_document(s), s.user_id.encode(), partition)
                for s in samples
            ]
        sends = [ack for acks in logged.values() for ack in acks]
        for record in batch.dead_letters:
            sends.append(await self._send("deadletter", encode_document(record)))
        for record in batch.activity:
            key = record["anchor_id"].encode()
            sends.append(await self._send("anchor-activity", encode_document(record), key))
        write = FeatureWrite(users=batch.users, user_anchor=batch.user_anchor)
        if write:
            await self._retry(lambda: self.redis.write(write), "redis write")
        if sends:
            await asyncio.gather(*sends)
        offsets = {p: [ack.result().offset for ack in acks] for p, acks in logged.items()}
        every = self.settings.streams.landing_interval_seconds
        done = await asyncio.to_thread(land_batch, self.lander, batch, every, offsets)
        for folder in done:
            log.info("window complete: %s", folder)
        # 2. Only now the state moves on, and the batch is acknowledged once it is durable.
        self.user_side.commit()
        await drain(self.user_tables.values())
        for (topic, partition), offset in batch.rewind.items():
            log.warning("gap in %s[%d]: reading again from offset %d", topic, partition, offset)
            await self.app.consumer.seek(TP(self.topic_of(topic), partition), offset)
        self.metrics.observe_user_batch(self.user_side, batch, len(messages))
        self._maybe_write_stats()

    async def _anchor_batch(self, events: Sequence[Any]) -> None:
        assert self.anchor_side is not None
        if not events:
            return
        messages = self._messages(events)
        writes, dead = self.anchor_side.process(messages)
        sends = [await self._send("deadletter", encode_document(record)) for record in dead]
        if writes:
            await self._retry(lambda: self.redis.write(FeatureWrite(anchors=writes)), "redis write")
        if sends:
            await asyncio.gather(*sends)
        self.anchor_side.commit()
        await drain([self.anchor_table])
        self.metrics.observe_anchor_batch(self.anchor_side, len(messages))
        self._maybe_write_stats()

    async def sweep_windows(self) -> None:
        """Mark the windows other partitions created behind the watermarks of the partitions
        this worker owns (see ``SampleLander.sweep``): without it a partition whose watermark
        stopped, idle or at the end of a replay, would hold those windows open for ever."""
        async with self.batch_lock:
            if self.user_side is None or not self.user_side.cores:
                return
            watermarks = {
                p: core.watermark for p, core in self.user_side.cores.items() if p in self.recovered
            }
            done = await asyncio.to_thread(self.lander.sweep, watermarks)
        for folder in done:
            log.info("window complete: %s", folder)

    async def revoke(self, revoked: set[Any]) -> None:
        """Partitions are being taken away: let the batch in flight finish, then forget them."""
        async with self.batch_lock:
            partitions = {tp.partition for tp in revoked}
            if self.user_side is not None:
                self.user_side.forget(partitions)
            for partition in sorted(partitions & self.recovered):
                # Its files written now: the next owner reads back only what comes after.
                await asyncio.to_thread(self.lander.release, partition)
                self.recovered.discard(partition)
        self._maybe_write_stats(force=True)  # the stats show only what this worker owns

    def _maybe_write_stats(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_stats < self.settings.streams.stats_interval_seconds:
            return
        self._last_stats = now
        stats = self.metrics.snapshot(self.user_side, self.anchor_side)
        stats["worker"] = self.name
        stats["landing"] = {
            "files_written": self.lander.files_written,
            "rows_written": self.lander.rows_written,
            "samples_read_back": self.samples_read_back,
        }
        stats["written_at"] = time.time()  # wall clock: how fresh the file is, for `status`
        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.stats_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(stats, indent=1, sort_keys=True))
        temporary.replace(self.stats_path)


def create_app(settings: Settings, name: str | None = None) -> tuple[faust.App, StreamRuntime]:
    """The faust app of the stream workers, and the runtime its agents call."""
    servers, extra = _broker(settings)
    partitions = settings.kafka.partitions
    datadir = Path(settings.home) / "streams" / "faust"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        consumer_group(settings),
        broker=servers,
        store="memory://",
        web_enabled=False,
        topic_partitions=partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.streams.commit_interval_seconds,
        broker_session_timeout=settings.streams.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.streams.session_timeout_seconds / 3),
        stream_buffer_maxsize=max(4096, settings.streams.batch_size * 2),
        table_cleanup_interval=3600.0,
        datadir=str(datadir),
        **extra,
    )
    # A batch writes its table changes (thousands of changelog messages) at once, and
    # ``StreamRuntime`` awaits them all before it acknowledges the batch. faust's producer
    # buffer, meant for a table written event by event, holds back every incoming message
    # while more than 100 are unsent, flushing with one warning per message (thousands per
    # demo). A message writes up to ~5 table entries: room for two batches of writes keeps
    # that backpressure for real overload.
    app.producer.buffer.max_messages = 10 * settings.streams.batch_size
    runtime = StreamRuntime(settings, app, name or worker_name())

    def raw_topic(*names: str) -> Any:
        return app.topic(
            *[settings.topic(n) for n in names],
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
        )

    schema: Any = faust.Schema(key_serializer="json", value_serializer="json")

    def table(table_name: str) -> Any:
        return app.Table(table_name, default=None, partitions=partitions, schema=schema)

    runtime.bind_user_tables({n: table(n) for n in ("join", "users", "user_anchor")})
    runtime.bind_anchor_table(table("anchors"))
    size, within = settings.streams.batch_size, settings.streams.batch_seconds

    @app.agent(raw_topic(*USER_SOURCES, "control"), name="users")
    async def users(stream: Any) -> None:
        async for events in stream.take_events(size, within=within):
            await runtime.handle_user_batch(events)

    @app.agent(raw_topic("anchor-status", "anchor-activity"), name="anchors")
    async def anchors(stream: Any) -> None:
        async for events in stream.take_events(size, within=within):
            await runtime.handle_anchor_batch(events)

    async def write_stats() -> None:
        runtime._maybe_write_stats(force=True)

    app.timer(settings.streams.stats_interval_seconds)(write_stats)
    app.timer(settings.streams.sweep_interval_seconds)(runtime.sweep_windows)

    async def on_revoked(app: Any, revoked: set[Any], **kwargs: Any) -> None:
        await runtime.revoke(revoked)

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]

    return app, runtime


def create_worker(app: faust.App, loglevel: str = "info") -> faust.Worker:
    """The faust worker that runs ``app`` (``liverank streams worker``), without faust's
    start-up spinner: at ``loglevel`` warning and above faust hangs the spinner on the root
    logger as a DEBUG handler and puts the root at DEBUG for the worker's life, and every
    debug call in faust and aiokafka (several per message sent) then built a log record that
    no handler kept (``bench/streams.py``: 1,454–1,736 events/s with it, 1,658–2,105
    without, interleaved)."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.spinner = None
    return worker
