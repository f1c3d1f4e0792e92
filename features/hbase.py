"""HBase through its Thrift server (happybase): table creation and a connection per store.

happybase is synchronous; async callers run these stores' methods in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from liverank.errors import LiverankError

T = TypeVar("T")
log = logging.getLogger("liverank.hbase")


class HBaseUnavailable(LiverankError):
    """HBase (its Thrift server) did not answer. Check ``[hbase]`` thrift_host / thrift_port
    and that the Thrift server runs (locally: ``liverank services status``)."""


class HBaseTables:
    """A lazily opened happybase connection that creates the tables it is asked for."""

    def __init__(self, host: str, port: int, prefix: str, timeout_ms: int = 5000) -> None:
        self.host, self.port, self.prefix, self.timeout_ms = host, port, prefix, timeout_ms
        self._connection: Any = None
        self._lock = threading.Lock()
        self._known: set[str] = set()

    def name(self, table: str) -> str:
        return f"{self.prefix}_{table}"

    def connection(self) -> Any:
        import happybase

        if self._connection is None:
            try:
                self._connection = happybase.Connection(
                    self.host, self.port, timeout=self.timeout_ms, autoconnect=True
                )
            except Exception as exc:
                raise HBaseUnavailable(
                    f"cannot reach HBase Thrift at {self.host}:{self.port}: {exc}"
                ) from exc
        return self._connection

    def table(self, table: str, families: dict[str, dict[str, Any]]) -> Any:
        """The happybase table ``<prefix>_<table>``, created with ``families`` if missing."""
        name = self.name(table)
        with self._lock:
            connection = self.connection()
            if name not in self._known:
                existing = {t.decode() for t in connection.tables()}
                if name not in existing:
                    try:
                        connection.create_table(name, families)
                    except Exception as exc:  # created meanwhile by another process
                        if "exists" not in str(exc).lower():
                            raise
                self._known.add(name)
            return connection.table(name)

    @contextlib.contextmanager
    def dropping_on_error(self) -> Iterator[None]:
        """Run a block of calls; when it fails, drop the connection before the error goes on
        (a Thrift socket that broke or timed out stays broken), so the next call reconnects."""
        try:
            yield
        except Exception:
            self.reset()
            raise

    def read(self, call: Callable[[], T]) -> T:
        """Run a read; when it fails, once more on a new connection (the Thrift server closes
        connections left idle, and the first call on one fails). A second failure raises."""
        try:
            return call()
        except Exception as exc:
            log.info("HBase read failed, reading again on a new connection: %s", exc)
            self.reset()
        with self.dropping_on_error():
            return call()

    def reset(self) -> None:
        """Drop the connection (after an error); the next call reconnects."""
        with self._lock:
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    self._connection.close()
            self._connection = None

    def close(self) -> None:
        self.reset()
