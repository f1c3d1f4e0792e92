"""Delete the Kafka topics and HBase tables of runs that are over (tests, benchmarks, demos).

Every test, benchmark and demo run works under its own prefix (``kafka.topic_prefix``,
``hbase.table_prefix``). Left behind, they pile up in the local services' data: thousands of
partitions kept Kafka busy with nothing to do, and hundreds of HBase regions ran the local
region server out of heap. ``forget(settings, prefixes)`` deletes what belongs to the given
prefixes:

- topics ``<prefix>.<name>`` (the contract's) and ``<prefix>-…`` (the faust app's own, its
  app id being ``<prefix>-streams``);
- tables ``<prefix>_<name>``.

A name belongs to a prefix only with its separator right after it, so the prefix ``run1``
never takes ``run10``'s data. Best effort: what cannot be deleted is reported, never raised
(leftovers cost disk, not correctness).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from liverank.settings import Settings


@dataclass
class Forgotten:
    topics: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"deleted {len(self.topics)} topics and {len(self.tables)} tables"
        return text + "".join(f"; {problem}" for problem in self.problems)


def belongs(name: str, prefixes: Iterable[str], separators: str) -> bool:
    """Whether ``name`` is ``<prefix><separator>…`` for one of ``prefixes``.

    >>> belongs("run1.clicks", ["run1"], ".-"), belongs("run10.clicks", ["run1"], ".-")
    (True, False)
    >>> belongs("run1-streams-pending-changelog", ["run1"], ".-")
    True
    """
    return any(
        len(name) > len(prefix) and name.startswith(prefix) and name[len(prefix)] in separators
        for prefix in prefixes
    )


def forget(settings: Settings, prefixes: Iterable[str]) -> Forgotten:
    """Delete the topics and tables of ``prefixes`` on the services ``settings`` name."""
    prefixes = [p for p in prefixes if p]
    done = Forgotten()
    if not prefixes:
        return done
    try:
        _delete_topics(settings, prefixes, done)
    except Exception as exc:
        done.problems.append(f"topics: {type(exc).__name__}: {exc}")
    try:
        _delete_tables(settings, prefixes, done)
    except Exception as exc:
        done.problems.append(f"tables: {type(exc).__name__}: {exc}")
    return done


def _delete_topics(settings: Settings, prefixes: list[str], done: Forgotten) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(client_id="liverank-scratch", **settings.kafka.client_options())
    try:
        names = sorted(t for t in admin.list_topics() if belongs(t, prefixes, ".-"))
        for start in range(0, len(names), 100):  # a few requests, not one per topic
            admin.delete_topics(names[start : start + 100], timeout_ms=30_000)
            done.topics += names[start : start + 100]
    finally:
        admin.close()


def _delete_tables(settings: Settings, prefixes: list[str], done: Forgotten) -> None:
    import happybase

    hbase = settings.hbase
    connection = happybase.Connection(hbase.thrift_host, hbase.thrift_port, timeout=60_000)
    try:
        names = sorted(
            name
            for name in (t.decode() for t in connection.tables())
            if belongs(name, prefixes, "_")
        )
        for name in names:
            try:
                connection.delete_table(name, disable=True)
                done.tables.append(name)
            except Exception as exc:
                done.problems.append(f"table {name}: {type(exc).__name__}: {exc}")
    finally:
        connection.close()
