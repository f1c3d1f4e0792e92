"""Real Kafka (KRaft), Redis and HBase (+ Thrift) on loopback, for development, tests and the demo.

Everything lives under ``<home>/services``: the jars Maven resolved (``lib/``), generated
configs (``conf/``), data, logs and pid files. ``up`` is idempotent and waits until each service
really answers; ``down`` leaves no process behind.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.local.processes import ManagedProcess
from liverank.errors import LiverankError
from liverank.settings import Settings

POM_DIR = Path(__file__).resolve().parent

# The flags HBase's own bin/hbase passes on JDK 17.
HBASE_JDK17_FLAGS = (
    "-Dorg.apache.hbase.thirdparty.io.netty.tryReflectionSetAccessible=true",
    "--add-modules",
    "jdk.unsupported",
    "--add-opens",
    "java.base/java.nio=ALL-UNNAMED",
    "--add-opens",
    "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.lang=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-exports",
    "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports",
    "java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "--add-exports",
    "java.base/sun.net.dns=ALL-UNNAMED",
    "--add-exports",
    "java.base/sun.net.util=ALL-UNNAMED",
)


class ServiceError(LiverankError):
    """A local service could not be prepared or did not come up.

    The message carries the tail of the service's log; the whole log is under
    ``<home>/services/logs``. Check that the ports in ``[local]`` are free, then run
    ``liverank services down`` and ``liverank services up`` again.
    """


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class Layout:
    """Where a local service keeps its jars, configs, data, logs and pid files."""

    root: Path

    def lib(self, name: str) -> Path:
        return self.root / "lib" / name

    def conf(self, name: str) -> Path:
        return self.root / "conf" / name

    def data(self, name: str) -> Path:
        return self.root / "data" / name

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def pid(self, name: str) -> Path:
        return self.root / "run" / f"{name}.pid"


class LocalService(ABC):
    """One service: its processes, how to prepare it, and how to ask it whether it answers."""

    name: str

    def __init__(self, settings: Settings, layout: Layout) -> None:
        self.settings = settings
        self.local = settings.local
        self.layout = layout

    @abstractmethod
    def processes(self) -> list[ManagedProcess]:
        """The processes, in start order."""

    @abstractmethod
    def prepare(self, progress: Progress) -> None:
        """Install / resolve / configure / format: everything before the first start."""

    @abstractmethod
    def probe(self) -> dict[str, Any]:
        """Ask the service itself; raise on any failure. Returns facts for ``status``."""

    @abstractmethod
    def address(self) -> str: ...

    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {"address": self.address()}
        pids = {p.name: p.pid() for p in self.processes()}
        report["pids"] = pids
        report["managed"] = all(pid is not None for pid in pids.values())
        if not any(pid is not None for pid in pids.values()) and not self.port_open():
            report["healthy"] = False
            report["error"] = "not running"
            return report
        try:
            # A service that answers is healthy, even one this home did not start (another
            # checkout's, or one the user runs): "managed" tells which.
            report.update(self.probe())
            report["healthy"] = True
        except Exception as exc:  # any failure to answer is "unhealthy", with its reason
            report["healthy"] = False
            missing = sorted(name for name, pid in pids.items() if pid is None)
            reason = f"{type(exc).__name__}: {exc}"
            report["error"] = f"not running: {', '.join(missing)}; {reason}" if missing else reason
        return report

    def port_open(self) -> bool:
        """Something answers on the service's port."""
        port = int(self.address().rsplit(":", 1)[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def managed(self, name: str, argv: Iterable[str], marker: str) -> ManagedProcess:
        return ManagedProcess(
            name=name,
            argv=tuple(argv),
            pid_file=self.layout.pid(name),
            log_file=self.layout.log(name),
            marker=marker,
        )

    def java(self, name: str, heap: str, classpath: list[Path], *args: str) -> ManagedProcess:
        argv = [
            self.local.java,
            f"-Xmx{heap}",
            f"-Dliverank.service={name}",
            "-cp",
            ":".join(str(p) for p in classpath),
            *args,
        ]
        return self.managed(name, argv, marker=f"-Dliverank.service={name}")

    def resolve_jars(self, pom_name: str, progress: Progress) -> Path:
        """``mvn dependency:copy-dependencies`` into lib/<name>, once per pom content."""
        pom = POM_DIR / pom_name / "pom.xml"
        lib = self.layout.lib(pom_name)
        stamp = lib / ".resolved"
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()
        if stamp.is_file() and stamp.read_text().strip() == digest:
            return lib
        if shutil.which(self.local.mvn) is None:
            raise ServiceError(
                f"{self.name}: Maven ('{self.local.mvn}') is not on PATH; install Maven "
                "(Debian: apt-get install maven) or set LIVERANK_LOCAL__MVN"
            )
        progress(f"{self.name}: resolving jars with Maven from {pom} (first time only)")
        if lib.exists():
            shutil.rmtree(lib)
        lib.mkdir(parents=True)
        result = subprocess.run(
            [
                self.local.mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={lib}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            raise ServiceError(f"{self.name}: Maven could not resolve {pom}:\n{tail}")
        stamp.write_text(digest + "\n")
        return lib


class KafkaService(LocalService):
    """Apache Kafka in KRaft mode: one combined broker + controller on 127.0.0.1."""

    name = "kafka"

    def address(self) -> str:
        return f"127.0.0.1:{self.local.kafka_port}"

    def _properties(self) -> Path:
        return self.layout.conf("kafka") / "server.properties"

    def processes(self) -> list[ManagedProcess]:
        log4j = self.layout.conf("kafka") / "log4j.properties"
        return [
            self.java(
                "kafka",
                self.local.kafka_heap,
                [self.layout.lib("kafka") / "*"],
                f"-Dlog4j.configuration=file:{log4j}",
                "kafka.Kafka",
                str(self._properties()),
            )
        ]

    def prepare(self, progress: Progress) -> None:
        lib = self.resolve_jars("kafka", progress)
        conf = self.layout.conf("kafka")
        conf.mkdir(parents=True, exist_ok=True)
        data = self.layout.data("kafka")
        port, controller = self.local.kafka_port, self.local.kafka_controller_port
        partitions = self.settings.kafka.partitions
        self._properties().write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{controller}",
                    f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={data}",
                    f"num.partitions={partitions}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=8",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "log.retention.hours=168",
                    "log.segment.bytes=134217728",
                    "",
                ]
            )
        )
        (conf / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, stdout\n"
            "log4j.logger.kafka.server.KafkaServer=INFO\n"
            "log4j.logger.kafka.server.BrokerServer=INFO\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        )
        if not (data / "meta.properties").is_file():
            progress("kafka: formatting KRaft storage")
            data.mkdir(parents=True, exist_ok=True)
            classpath = str(lib / "*")
            cluster_id = self._run_tool(classpath, "random-uuid").strip().splitlines()[-1]
            self._run_tool(
                classpath,
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self._properties()),
                "--ignore-formatted",
            )

    def _run_tool(self, classpath: str, *args: str) -> str:
        log4j = self.layout.conf("kafka") / "log4j.properties"
        result = subprocess.run(
            [
                self.local.java,
                f"-Dlog4j.configuration=file:{log4j}",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                *args,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ServiceError(f"kafka: StorageTool {args[0]} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def probe(self) -> dict[str, Any]:
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(
            bootstrap_servers=[self.address()],
            request_timeout_ms=3000,
            client_id="liverank-health",
        )
        try:
            cluster = admin.describe_cluster()
            topics = admin.list_topics()
        finally:
            admin.close()
        return {"brokers": len(cluster.get("brokers", [])), "topics": len(topics)}


class RedisService(LocalService):
    """Debian's redis-server on 127.0.0.1 (installed with apt-get when missing)."""

    name = "redis"

    def address(self) -> str:
        return f"127.0.0.1:{self.local.redis_port}"

    def _binary(self) -> str:
        return shutil.which("redis-server") or "/usr/bin/redis-server"

    def processes(self) -> list[ManagedProcess]:
        data = self.layout.data("redis")
        argv = [
            self._binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.local.redis_port),
            "--dir",
            str(data),
            "--daemonize",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ]
        # redis-server renames its process to "redis-server 127.0.0.1:PORT"; the port is in both.
        return [self.managed("redis", argv, marker=str(self.local.redis_port))]

    def prepare(self, progress: Progress) -> None:
        self.layout.data("redis").mkdir(parents=True, exist_ok=True)
        if Path(self._binary()).is_file():
            return
        if shutil.which("apt-get") is None:
            raise ServiceError("redis: redis-server is not installed and apt-get is not available")
        progress("redis: installing Debian's redis-server with apt-get")
        for argv in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "redis-server"],
        ):
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
            if result.returncode != 0:
                raise ServiceError(
                    f"redis: `{' '.join(argv)}` failed (run it as root):\n{result.stderr[-2000:]}"
                )

    def probe(self) -> dict[str, Any]:
        import redis

        client = redis.Redis(
            host="127.0.0.1", port=self.local.redis_port, socket_timeout=2, socket_connect_timeout=2
        )
        try:
            if not client.ping():
                raise ConnectionError("PING was not answered with PONG")
            info = client.info("server")
        finally:
            client.close()
        return {"version": info.get("redis_version")}


HEALTH_TABLE = "liverank_health"  # the local HBase probe creates it and reads from it


class HBaseService(LocalService):
    """HBase in standalone mode (master, region server and ZooKeeper in one JVM) + Thrift1."""

    name = "hbase"

    def address(self) -> str:
        return f"127.0.0.1:{self.local.hbase_thrift_port}"

    def _classpath(self) -> list[Path]:
        return [self.layout.conf("hbase"), self.layout.lib("hbase") / "*"]

    def processes(self) -> list[ManagedProcess]:
        log_conf = (
            f"-Dlog4j2.configurationFile=file:{self.layout.conf('hbase') / 'log4j2.properties'}"
        )
        master = self.java(
            "hbase-master",
            self.local.hbase_heap,
            self._classpath(),
            *HBASE_JDK17_FLAGS,
            log_conf,
            "org.apache.hadoop.hbase.master.HMaster",
            "start",
        )
        thrift = self.java(
            "hbase-thrift",
            self.local.hbase_thrift_heap,
            self._classpath(),
            *HBASE_JDK17_FLAGS,
            log_conf,
            "org.apache.hadoop.hbase.thrift.ThriftServer",
            "-p",
            str(self.local.hbase_thrift_port),
            "-b",
            "127.0.0.1",
            "start",
        )
        return [master, thrift]

    def prepare(self, progress: Progress) -> None:
        self.resolve_jars("hbase", progress)
        conf = self.layout.conf("hbase")
        conf.mkdir(parents=True, exist_ok=True)
        data = self.layout.data("hbase").resolve()
        properties = {
            "hbase.cluster.distributed": "false",
            "hbase.rootdir": f"file://{data / 'root'}",
            "hbase.tmp.dir": str(data / "tmp"),
            "hbase.zookeeper.property.dataDir": str(data / "zookeeper"),
            "hbase.zookeeper.property.clientPort": str(self.local.hbase_zookeeper_port),
            "hbase.zookeeper.quorum": "127.0.0.1",
            "hbase.unsafe.stream.capability.enforce": "false",
            "hbase.master.info.port": "-1",
            "hbase.regionserver.info.port": "-1",
            "hbase.thrift.info.port": "-1",
            "hbase.master.port": str(self.local.hbase_master_port),
            "hbase.regionserver.port": str(self.local.hbase_regionserver_port),
            "hbase.master.ipc.address": "127.0.0.1",
            "hbase.regionserver.ipc.address": "127.0.0.1",
            # A small heap on a shared machine: bound the RPC queue (1 GB by default, more
            # than the heap) so a burst of big snapshot puts is pushed back, with a retry,
            # instead of running the region server out of memory; and keep the block cache
            # small (reads here are point gets of small rows) to leave room for the memstore.
            "hbase.ipc.server.max.callqueue.size": str(64 * 1024 * 1024),
            "hfile.block.cache.size": "0.2",
        }
        body = "".join(
            f"  <property><name>{k}</name><value>{v}</value></property>\n"
            for k, v in properties.items()
        )
        (conf / "hbase-site.xml").write_text(
            f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'
        )
        (conf / "log4j2.properties").write_text(
            "status = warn\n"
            "appender.console.type = Console\n"
            "appender.console.name = console\n"
            "appender.console.layout.type = PatternLayout\n"
            "appender.console.layout.pattern = %d{ISO8601} %-5p [%t] %c{2}: %m%n\n"
            "rootLogger = WARN,console\n"
            "logger.master.name = org.apache.hadoop.hbase.master.HMaster\n"
            "logger.master.level = INFO\n"
            "logger.thrift.name = org.apache.hadoop.hbase.thrift\n"
            "logger.thrift.level = INFO\n"
        )

    def probe(self) -> dict[str, Any]:
        import happybase

        connection = happybase.Connection(
            "127.0.0.1", self.local.hbase_thrift_port, timeout=5000, autoconnect=True
        )
        try:
            tables = {t.decode() for t in connection.tables()}
            # Listing tables works before the master has finished starting; creating one and
            # reading from it only after (a fresh master takes 15 s or more on a busy machine).
            if HEALTH_TABLE not in tables:
                connection.create_table(HEALTH_TABLE, {"f": {"max_versions": 1}})
            connection.table(HEALTH_TABLE).row(b"probe")
        finally:
            connection.close()
        return {"tables": len(tables - {HEALTH_TABLE})}


class LocalServices:
    """``up`` / ``down`` / ``status`` over the three services."""

    def __init__(self, settings: Settings, progress: Progress = _quiet) -> None:
        self.layout = Layout(settings.home.resolve() / "services")
        self.services: list[LocalService] = [
            KafkaService(settings, self.layout),
            RedisService(settings, self.layout),
            HBaseService(settings, self.layout),
        ]
        self.progress = progress
        self.timeout = settings.local.start_timeout_seconds

    def select(self, names: Iterable[str] | None) -> list[LocalService]:
        if not names:
            return self.services
        known = {s.name: s for s in self.services}
        unknown = sorted(set(names) - known.keys())
        if unknown:
            raise ServiceError(f"unknown service(s) {unknown}; known: {sorted(known)}")
        return [known[n] for n in names]

    def up(self, names: Iterable[str] | None = None) -> dict[str, float]:
        """Start what is not running and wait until each service answers.

        Returns the seconds each service took (0 for one that was already healthy).
        """
        timings: dict[str, float] = {}
        for service in self.select(names):
            started = time.monotonic()
            if service.health()["healthy"]:
                self.progress(f"{service.name}: already up at {service.address()}")
                timings[service.name] = 0.0
                continue
            service.prepare(self.progress)
            for process in service.processes():
                if process.pid() is None:
                    self._check_port_free(service, process)
                    process.start()
                    self.progress(
                        f"{service.name}: started {process.name} (log {process.log_file})"
                    )
            self._wait_healthy(service)
            timings[service.name] = time.monotonic() - started
            self.progress(
                f"{service.name}: healthy at {service.address()} in {timings[service.name]:.1f}s"
            )
        return timings

    def down(self, names: Iterable[str] | None = None) -> list[str]:
        """Stop every process of the services (in reverse start order); return what stopped."""
        stopped: list[str] = []
        for service in reversed(self.select(names)):
            for process in reversed(service.processes()):
                if process.stop():
                    stopped.append(process.name)
                    self.progress(f"{service.name}: stopped {process.name}")
        return stopped

    def status(self, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        return {service.name: service.health() for service in self.select(names)}

    def _wait_healthy(self, service: LocalService) -> None:
        deadline = time.monotonic() + self.timeout
        report: dict[str, Any] = {}
        while time.monotonic() < deadline:
            report = service.health()
            if report["healthy"]:
                return
            dead = [p for p in service.processes() if p.exited()]
            if dead:
                raise ServiceError(
                    f"{service.name}: {dead[0].name} exited during start-up; "
                    f"log tail ({dead[0].log_file}):\n{dead[0].log_tail()}"
                )
            time.sleep(1.0)
        tails = "\n".join(
            f"--- {p.name} ({p.log_file}):\n{p.log_tail()}" for p in service.processes()
        )
        raise ServiceError(
            f"{service.name}: not healthy after {self.timeout:.0f}s "
            f"({report.get('error', 'no answer')}); log tail:\n{tails}"
        )

    @staticmethod
    def _check_port_free(service: LocalService, process: ManagedProcess) -> None:
        if process.name == service.processes()[-1].name and service.port_open():
            raise ServiceError(
                f"{service.name}: {service.address()} is taken by another program that is not a "
                f"healthy {service.name}; free it or change the port under [local] in the settings"
            )


def print_progress(message: str) -> None:
    print(f"[services] {message}", file=sys.stderr, flush=True)
