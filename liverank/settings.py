"""The one settings object: environment (prefix ``LIVERANK_``) + an optional TOML file.

Built once at the entry point (``Settings.load``) and passed down; no other module reads the
environment. Nested sections are set from the environment with a double underscore, e.g.
``LIVERANK_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or ``LIVERANK_LABELS__CLICK_WINDOW=600``.
A key that does not exist (a typo in the TOML file or the environment) fails loudly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "LIVERANK_CONFIG"
"""Environment variable naming the TOML file (default: ``liverank.toml`` if it exists)."""


class Section(BaseModel):
    """A frozen settings section that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(Section):
    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    topic_prefix: str = "liverank"
    partitions: int = Field(4, ge=1, description="partition count of every topic (co-partitioned)")
    replication_factor: int = Field(1, ge=1)
    max_event_bytes: int = Field(64 * 1024, ge=1024, description="larger events are dead letters")

    def client_options(self) -> dict[str, Any]:
        """Connection options shared by kafka-python clients (security included)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.ssl_cafile:
            options["ssl_cafile"] = str(self.ssl_cafile)
        return options


class RedisSettings(Section):
    url: str = "redis://127.0.0.1:16379/0"
    password: SecretStr | None = None
    feature_ttl_seconds: int = Field(8 * 24 * 3600, ge=60)
    socket_timeout_seconds: float = Field(0.5, gt=0)


class StreamsSettings(Section):
    """The stream workers (faust)."""

    batch_size: int = Field(2000, ge=1, description="messages a worker handles at once")
    batch_seconds: float = Field(0.5, gt=0, description="wait at most this long to fill a batch")
    metrics_port: int = Field(0, ge=0, description="Prometheus port of a worker; 0: none")
    stats_interval_seconds: float = Field(5.0, gt=0)
    sweep_interval_seconds: float = Field(
        10.0,
        gt=0,
        description="how often a worker marks the windows other partitions created behind "
        "the watermarks of its own (one listing of the sample folders each time)",
    )
    commit_interval_seconds: float = Field(2.0, gt=0)
    landing_interval_seconds: float = Field(
        300.0,
        ge=0,
        description="event-time seconds between rewrites of a partition's changed window "
        "files (a window's file is always written before it is marked; meanwhile its samples "
        "are safe in <prefix>.samples); 0: after every batch",
    )
    session_timeout_seconds: float = Field(
        10.0, ge=6, description="a dead worker's partitions move to the others after this long"
    )


class HBaseSettings(Section):
    thrift_host: str = "127.0.0.1"
    thrift_port: int = 19090
    table_prefix: str = "liverank"
    snapshot_ttl_seconds: int = Field(3 * 24 * 3600, ge=60)
    profile_cache_seconds: float = Field(300.0, ge=0)
    timeout_ms: int = Field(5000, ge=100)


class LabelSettings(Section):
    """The label-join rules of DESIGN §4 (all in event-time seconds)."""

    policy: Literal["negative_cache", "fake_negative"] = "negative_cache"
    click_window: float = Field(300.0, gt=0)
    conversion_window: float = Field(1800.0, gt=0)
    effective_watch_seconds: float = Field(30.0, ge=0)
    allowed_lateness: float = Field(60.0, ge=0)


class AdmissionSettings(Section):
    """Feature admission (DESIGN §6); per-field overrides live in ``fields``."""

    mode: Literal["hard", "poisson", "dynamic_l1"] = "hard"
    full_threshold: int = Field(5, ge=1)
    incremental_threshold: int = Field(2, ge=1)
    poisson_p: float = Field(0.2, gt=0, le=1)
    l1: float = Field(1e-3, ge=0)
    l1_c: float = Field(4.0, ge=0)
    l1_n: int = Field(20, ge=1)
    vocab_ttl_days: int = Field(7, ge=1)
    fields: dict[str, dict[str, float | int | str]] = Field(default_factory=dict)


class FieldSettings(Section):
    """How the trainer reads one sample column (see ``trainer.fields``)."""

    kind: Literal["id", "numeric", "sequence"]
    vocab: str | None = Field(None, description="vocabulary name; fields that share IDs share one")
    boundaries: tuple[float, ...] | None = Field(None, description="numeric: bucket boundaries")
    max_length: int | None = Field(None, ge=1, description="sequence: items kept (newest first)")


class TrainerSettings(Section):
    window_minutes: int = Field(15, ge=1)
    restart_policy: Literal["from_base", "chained"] = "from_base"
    # The running incremental trainer warm-restarts by itself from a newer offline base.
    auto_restart: bool = True
    objective: Literal["esmm", "separate"] = Field(
        "esmm", description="esmm, or a CTR model plus a CVR model trained on clicks only"
    )
    embedding_dim: int = Field(16, ge=1)
    mlp_hidden: tuple[int, ...] = (128, 64)
    mlp_dtype: Literal["bfloat16", "float32"] = Field(
        "bfloat16",
        description="the towers' MLP matmuls (bfloat16 autocast: about twice as fast on "
        "CPUs with AVX512-BF16 or AMX, slower where it is emulated)",
    )
    interest_length: int = Field(50, ge=1)
    interest_sequence: str = Field("u_recent_anchors", description="the user's recent items")
    interest_target: str = Field("anchor_id", description="the item the interest attends from")
    fields: dict[str, FieldSettings] = Field(
        default_factory=dict,
        description="per-column overrides of the default catalogue (any sample set's columns)",
    )
    exclude_fields: tuple[str, ...] = ()
    batch_size: int = Field(1024, ge=1)
    learning_rate: float = Field(0.01, gt=0, description="sparse rows (row-wise Adagrad)")
    dense_learning_rate: float = Field(0.001, gt=0, description="towers (Adam)")
    ftrl_alpha: float = Field(0.05, gt=0)
    ftrl_beta: float = Field(1.0, ge=0)
    ftrl_l2: float = Field(0.0, ge=0)
    seed: int = 7
    holdout_percent: int = Field(10, ge=0, lt=100, description="samples never trained on")
    gate_windows: int = Field(4, ge=1, description="earlier windows in the gate's second set")
    gate_auc_margin: float = Field(0.01, ge=0)
    gate_logloss_margin: float = Field(0.02, ge=0)
    retention_versions: int = Field(20, ge=1)
    retention_hours: float = Field(24.0, ge=0)
    poll_interval_seconds: float = Field(5.0, gt=0)
    metrics_port: int = Field(0, ge=0, description="Prometheus port of the trainer; 0: none")


class ScorerSettings(Section):
    host: str = "127.0.0.1"
    port: int = 18080
    admin_token: SecretStr | None = None
    poll_interval_seconds: float = Field(5.0, gt=0)
    score: Literal["ctcvr", "blend"] = "ctcvr"
    blend_ctr_weight: float = Field(0.5, ge=0, le=1)
    snapshot_queue_size: int = Field(10_000, ge=1)
    # Threads of a request's forward pass. 200 candidates are too few to split, and a second
    # thread spin-waits against the HTTP loop for the same cores: at 100 req/s on 2 cores,
    # p50 8 ms with 1 thread, 262 ms with 2 (bench/scorer.py).
    torch_threads: int = Field(1, ge=1)
    # Processes serving the port (each with its own model copy, puller and snapshot writer).
    # More than one: more requests per second on more cores, but an admin rollback would move
    # one process only, so it is refused (roll LATEST back instead).
    workers: int = Field(1, ge=1)
    # How long a request waits for the profiles its cache misses (then: defaults, degraded);
    # the read goes on in the background and fills the cache for the next requests.
    profile_timeout_seconds: float = Field(0.5, gt=0)


class LocalServicesSettings(Section):
    """Ports and folders of the loopback services started by ``liverank services up``."""

    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    redis_port: int = 16379
    hbase_thrift_port: int = 19090
    hbase_zookeeper_port: int = 12181
    hbase_master_port: int = 16100
    hbase_regionserver_port: int = 16120
    start_timeout_seconds: float = Field(180.0, gt=0)
    java: str = "java"
    mvn: str = "mvn"
    kafka_heap: str = "512m"
    hbase_heap: str = "768m"
    hbase_thrift_heap: str = "256m"


class Settings(BaseSettings):
    """Every knob of liverank. ``Settings.load()`` at the entry point; pass it down."""

    model_config = SettingsConfigDict(
        env_prefix="LIVERANK_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    home: Path = Field(Path(".liverank"), description="data, logs and local services live here")
    samples_root: str = ""
    checkpoint_root: str = ""
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    hbase: HBaseSettings = HBaseSettings()
    labels: LabelSettings = LabelSettings()
    streams: StreamsSettings = StreamsSettings()
    admission: AdmissionSettings = AdmissionSettings()
    trainer: TrainerSettings = TrainerSettings()
    scorer: ScorerSettings = ScorerSettings()
    local: LocalServicesSettings = LocalServicesSettings()

    @model_validator(mode="after")
    def _derive_roots(self) -> Settings:
        # Frozen model: fill the derived defaults through object.__setattr__ once, here.
        if not self.samples_root:
            object.__setattr__(self, "samples_root", str(self.home / "samples"))
        if not self.checkpoint_root:
            object.__setattr__(self, "checkpoint_root", str(self.home / "checkpoints"))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    @classmethod
    def load(cls, config: Path | None = None, **overrides: Any) -> Settings:
        """Build the settings: explicit overrides > environment > TOML file > defaults.

        The TOML file is ``config``, else the file named by ``LIVERANK_CONFIG``, else
        ``./liverank.toml`` when it exists.
        """
        path = config if config is not None else _toml_file_from_environment()
        if path is None:
            return cls(**overrides)
        if not path.is_file():
            raise FileNotFoundError(f"settings file {path} does not exist")
        with_file = type(
            cls.__name__, (cls,), {"model_config": {**cls.model_config, "toml_file": path}}
        )
        settings: Settings = with_file(**overrides)
        return settings

    def topic(self, name: str) -> str:
        """Full topic name ``<prefix>.<name>``."""
        return f"{self.kafka.topic_prefix}.{name}"

    def as_environment(self) -> dict[str, str]:
        """These settings as ``LIVERANK_*`` variables: a child process started with them (and
        no other settings file) builds equal settings. Lists and tables are JSON."""
        env: dict[str, str] = {}
        for name, value in _plain(self.model_dump()).items():
            fields = value.items() if isinstance(value, dict) else [(None, value)]
            for field, leaf in fields:
                if leaf is None:
                    continue
                key = f"LIVERANK_{name}" + (f"__{field}" if field else "")
                text = json.dumps(leaf) if isinstance(leaf, dict | list) else str(leaf)
                env[key.upper()] = text
        return env


def _plain(value: Any) -> Any:
    """JSON-ready, secrets revealed (for a child process's environment, never for a log)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _toml_file_from_environment() -> Path | None:
    named = os.environ.get(CONFIG_ENV)
    if named:
        return Path(named)
    default = Path("liverank.toml")
    return default if default.is_file() else None
