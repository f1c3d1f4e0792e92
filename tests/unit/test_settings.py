"""Settings: defaults, environment, TOML file, and loud failures on unknown keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from liverank.settings import Settings


def test_defaults_follow_the_design() -> None:
    settings = Settings.load()
    labels = settings.labels
    assert (labels.click_window, labels.conversion_window) == (300.0, 1800.0)
    assert (labels.effective_watch_seconds, labels.allowed_lateness) == (30.0, 60.0)
    assert labels.policy == "negative_cache"
    assert settings.trainer.window_minutes == 15
    assert settings.trainer.restart_policy == "from_base"
    assert settings.topic("clicks") == "liverank.clicks"
    assert settings.samples_root == str(Path(".liverank") / "samples")


def test_environment_sets_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVERANK_KAFKA__TOPIC_PREFIX", "staging")
    monkeypatch.setenv("LIVERANK_LABELS__CLICK_WINDOW", "600")
    monkeypatch.setenv("LIVERANK_HOME", "/data/liverank")
    settings = Settings.load()
    assert settings.topic("impressions") == "staging.impressions"
    assert settings.labels.click_window == 600.0
    assert settings.checkpoint_root == "/data/liverank/checkpoints"


def test_toml_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "liverank.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = "k1:9092,k2:9092"\npartitions = 12\n'
        '[labels]\npolicy = "fake_negative"\nallowed_lateness = 30\n'
    )
    monkeypatch.setenv("LIVERANK_KAFKA__PARTITIONS", "6")
    settings = Settings.load(config)
    assert settings.kafka.client_options()["bootstrap_servers"] == ["k1:9092", "k2:9092"]
    assert settings.kafka.partitions == 6
    assert settings.labels.policy == "fake_negative"
    assert settings.labels.allowed_lateness == 30.0


def test_config_named_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "prod.toml"
    config.write_text('samples_root = "s3://bucket/samples"\n')
    monkeypatch.setenv("LIVERANK_CONFIG", str(config))
    assert Settings.load().samples_root == "s3://bucket/samples"


def test_a_typo_in_the_toml_file_fails_loudly(tmp_path: Path) -> None:
    config = tmp_path / "liverank.toml"
    config.write_text("[labels]\nclick_windw = 600\n")
    with pytest.raises(ValidationError, match="click_windw"):
        Settings.load(config)


def test_an_unknown_top_level_key_fails(tmp_path: Path) -> None:
    config = tmp_path / "liverank.toml"
    config.write_text("partitons = 3\n")
    with pytest.raises(ValidationError, match="partitons"):
        Settings.load(config)


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Settings.load(tmp_path / "nope.toml")


def test_values_are_checked() -> None:
    with pytest.raises(ValidationError):
        Settings.load(labels={"click_window": -5})
    with pytest.raises(ValidationError):
        Settings.load(kafka={"partitions": 0})


def test_settings_are_frozen() -> None:
    settings = Settings.load()
    with pytest.raises(ValidationError):
        settings.labels.click_window = 10  # type: ignore[misc]


def test_sasl_options_reach_the_clients() -> None:
    settings = Settings.load(
        kafka={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "svc",
            "sasl_password": "s3cret",
        }
    )
    options = settings.kafka.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_plain_password"] == "s3cret"
    assert "s3cret" not in repr(settings)


def test_as_environment_rebuilds_equal_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        home=Path("/tmp/elsewhere"),
        kafka={"topic_prefix": "demo7", "sasl_password": "s3cret"},  # type: ignore[arg-type]
        trainer={"mlp_hidden": [32, 16], "fields": {"u_age_band": {"kind": "id"}}},  # type: ignore[arg-type]
        scorer={"admin_token": "tok"},  # type: ignore[arg-type]
    )
    for key in [k for k in os.environ if k.startswith("LIVERANK_")]:
        monkeypatch.delenv(key)
    for key, value in settings.as_environment().items():
        monkeypatch.setenv(key, value)
    assert Settings() == settings
