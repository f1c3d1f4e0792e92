"""Topic names and creation: every topic with the configured partition count (co-partitioned)."""

from __future__ import annotations

import contextlib
import time

from liverank.errors import LiverankError
from liverank.settings import Settings
from streams.events import INPUT_TOPICS, INTERNAL_TOPICS, OUTPUT_TOPICS


def consumer_group(settings: Settings) -> str:
    """The stream workers' faust app id, which is their Kafka consumer group."""
    return f"{settings.kafka.topic_prefix}-streams"


class TopicError(LiverankError):
    """A topic exists with a partition count other than the configured one.

    User-keyed topics must be co-partitioned (the same count everywhere) so that one user's
    impressions, clicks, watch and actions meet in one partition. Recreate the topic with
    ``partitions`` from the settings, or set ``LIVERANK_KAFKA__PARTITIONS`` to the count the
    cluster has.
    """


def contract_topics(settings: Settings) -> list[str]:
    """Every topic of the contract, with the prefix."""
    return [settings.topic(name) for name in (*INPUT_TOPICS, *OUTPUT_TOPICS, *INTERNAL_TOPICS)]


def describe_topics(settings: Settings) -> dict[str, int | None]:
    """topic → partition count on the cluster (None when missing)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(client_id="liverank-topics", **settings.kafka.client_options())
    try:
        existing = set(admin.list_topics())
        wanted = contract_topics(settings)
        present = [t for t in wanted if t in existing]
        counts: dict[str, int | None] = dict.fromkeys(wanted)
        for description in admin.describe_topics(present) if present else []:
            # kafka-python ≥ 2.1 names the topic "name", older releases "topic".
            name = description.get("name") or description.get("topic")
            counts[name] = len(description["partitions"])
        return counts
    finally:
        admin.close()


def ensure_topics(settings: Settings) -> list[str]:
    """Create the missing topics; check the partition count of the existing ones.

    Returns the names created. Idempotent. Raises TopicError on a partition-count mismatch.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    counts = describe_topics(settings)
    expected = settings.kafka.partitions
    wrong = {t: n for t, n in counts.items() if n is not None and n != expected}
    if wrong:
        raise TopicError(
            f"topics {wrong} do not have the configured {expected} partitions; "
            "all liverank topics must be co-partitioned"
        )
    missing = [t for t, n in counts.items() if n is None]
    if not missing:
        return []
    admin = KafkaAdminClient(client_id="liverank-topics", **settings.kafka.client_options())
    try:
        new = [
            NewTopic(
                name, num_partitions=expected, replication_factor=settings.kafka.replication_factor
            )
            for name in missing
        ]
        # Created meanwhile by another worker is fine: the counts are checked below.
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(new, timeout_ms=30_000)
    finally:
        admin.close()
    # Creation is acknowledged before every broker's metadata shows the topic: wait for it.
    deadline = time.monotonic() + 30
    while True:
        after = describe_topics(settings)
        absent = [t for t in missing if after.get(t) is None]
        if not absent:
            return missing
        if time.monotonic() > deadline:
            raise TopicError(f"topics {absent} were not created within 30 s")
        time.sleep(0.2)
