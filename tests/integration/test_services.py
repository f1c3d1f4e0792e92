"""The local services are real: Kafka, Redis and HBase answer, and up/down behave."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import happybase
import redis
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from deploy.local.scratch import forget
from deploy.local.services import LocalServices
from liverank.settings import Settings
from tests.integration.conftest import ROOT


def test_status_json_shows_all_three_healthy(services: LocalServices) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "liverank.cli", "services", "status", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"kafka", "redis", "hbase"}
    assert all(report[name]["healthy"] for name in report), report


def test_a_second_up_changes_nothing(services: LocalServices) -> None:
    before = {name: facts["pids"] for name, facts in services.status().items()}
    timings = services.up()
    after = {name: facts["pids"] for name, facts in services.status().items()}
    assert after == before
    assert timings == {"kafka": 0.0, "redis": 0.0, "hbase": 0.0}


def test_kafka_round_trip_with_a_consumer_group(
    services: LocalServices, settings: Settings, unique: str
) -> None:
    prefix = f"it{unique}"
    topic = f"{prefix}.roundtrip"
    try:
        options = settings.kafka.client_options()
        admin = KafkaAdminClient(**options)
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        admin.close()
        producer = KafkaProducer(**options)
        sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(50)}
        for key, value in sent.items():
            producer.send(topic, key=key, value=value)
        producer.flush()
        producer.close()

        def consume(group: str) -> dict[bytes, bytes]:
            consumer = KafkaConsumer(
                topic,
                group_id=group,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                consumer_timeout_ms=3000,
                **options,
            )
            received: dict[bytes, bytes] = {}
            deadline = time.monotonic() + 60
            while len(received) < len(sent) and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=500).values():
                    received.update((m.key, m.value) for m in batch)
            consumer.commit()
            consumer.close()
            return received

        group = f"it-group-{unique}"
        assert consume(group) == sent
        # The group committed its offsets: a second consumer in it finds nothing new.
        consumer = KafkaConsumer(topic, group_id=group, consumer_timeout_ms=3000, **options)
        leftover = [m for batch in consumer.poll(timeout_ms=3000).values() for m in batch]
        consumer.close()
        assert leftover == []
    finally:
        forget(settings, [prefix])  # the local Kafka keeps no topics of a finished test


def test_redis_round_trip(services: LocalServices, settings: Settings, unique: str) -> None:
    client = redis.Redis.from_url(settings.redis.url)
    key = f"it:{unique}"
    with client.pipeline() as pipe:
        pipe.hset(key, mapping={"clicks": 3, "ctr": "0.25"})
        pipe.expire(key, 60)
        pipe.execute()
    assert client.hgetall(key) == {b"clicks": b"3", b"ctr": b"0.25"}
    assert 0 < client.ttl(key) <= 60
    client.delete(key)
    client.close()


def test_hbase_put_and_scan(services: LocalServices, settings: Settings, unique: str) -> None:
    connection = happybase.Connection(settings.hbase.thrift_host, settings.hbase.thrift_port)
    table_name = f"it_{unique}"
    connection.create_table(table_name, {"f": {"max_versions": 1}})
    try:
        table = connection.table(table_name)
        with table.batch() as batch:
            for i in range(5):
                batch.put(f"row{i}".encode(), {b"f:value": str(i * i).encode()})
        rows = dict(table.scan(row_prefix=b"row"))
        assert rows == {f"row{i}".encode(): {b"f:value": str(i * i).encode()} for i in range(5)}
        assert table.row(b"row3") == {b"f:value": b"9"}
    finally:
        connection.delete_table(table_name, disable=True)
        connection.close()


def test_down_leaves_no_process_and_up_brings_it_back(
    services: LocalServices, settings: Settings
) -> None:
    pid = services.status(["redis"])["redis"]["pids"]["redis"]
    assert services.down(["redis"]) == ["redis"]
    assert services.status(["redis"])["redis"]["healthy"] is False
    assert not _alive(pid)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", settings.local.redis_port)) != 0
    services.up(["redis"])
    assert services.status(["redis"])["redis"]["healthy"] is True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_topics_are_created_co_partitioned_and_checked(
    services: LocalServices, settings: Settings, unique: str
) -> None:
    import pytest

    from streams.topics import TopicError, contract_topics, describe_topics, ensure_topics

    prefix = f"it{unique}"
    scoped = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})}
    )
    try:
        created = ensure_topics(scoped)
        assert sorted(created) == sorted(contract_topics(scoped))
        assert set(describe_topics(scoped).values()) == {scoped.kafka.partitions}
        assert ensure_topics(scoped) == []  # idempotent

        wrong = settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(update={"topic_prefix": prefix, "partitions": 3})
            }
        )
        with pytest.raises(TopicError, match="co-partitioned"):
            ensure_topics(wrong)
    finally:
        forget(settings, [prefix])  # the local Kafka keeps no topics of a finished test


def test_forget_deletes_a_prefixs_topics_and_tables_and_nothing_else(
    services: LocalServices, settings: Settings, unique: str
) -> None:
    """What a finished run leaves (its topics, the faust app's own, its tables) goes; a
    prefix that only starts the same way keeps everything."""
    mine, neighbour = f"fg{unique}", f"fg{unique}0"
    topics = [f"{mine}.clicks", f"{mine}-streams-pending-changelog", f"{neighbour}.clicks"]
    admin = KafkaAdminClient(**settings.kafka.client_options())
    connection = happybase.Connection(settings.hbase.thrift_host, settings.hbase.thrift_port)
    try:
        admin.create_topics([NewTopic(t, 1, 1) for t in topics])
        for table in (f"{mine}_snapshots", f"{neighbour}_snapshots"):
            connection.create_table(table, {"f": {"max_versions": 1}})

        done = forget(settings, [mine])

        assert done.problems == []
        assert sorted(done.topics) == sorted(topics[:2])
        assert done.tables == [f"{mine}_snapshots"]
        left = set(admin.list_topics())
        assert not left & set(topics[:2]) and topics[2] in left
        tables = {t.decode() for t in connection.tables()}
        assert f"{mine}_snapshots" not in tables and f"{neighbour}_snapshots" in tables
    finally:
        forget(settings, [neighbour])
        admin.close()
        connection.close()
