"""Files for users' clusters that cannot run here: the compose file and the local poms."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_compose_file_has_every_part_of_the_system() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "hbase", "streams-worker", "trainer", "scorer"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), name
    assert services["streams-worker"]["deploy"]["replicas"] == 2
    env = services["scorer"]["environment"]
    assert env["LIVERANK_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert set(compose["volumes"]) >= {"liverank-data", "kafka-data", "hbase-data"}


def test_compose_environment_names_real_settings() -> None:
    from liverank.settings import Settings

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    environment = compose["services"]["trainer"]["environment"]
    fields = Settings.model_fields
    for variable in environment:
        path = variable.removeprefix("LIVERANK_").lower().split("__")
        assert path[0] in fields, variable
        if len(path) == 2:
            section = fields[path[0]].annotation
            assert path[1] in section.model_fields, variable  # type: ignore[union-attr]


def test_local_poms_pin_the_documented_versions() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    kafka = ET.parse(DEPLOY / "local" / "kafka" / "pom.xml").getroot()
    assert kafka.find("m:properties/m:kafka.version", ns).text.startswith("3.9.")  # type: ignore[union-attr]
    hbase = ET.parse(DEPLOY / "local" / "hbase" / "pom.xml").getroot()
    assert hbase.find("m:properties/m:hbase.version", ns).text.startswith("2.6.")  # type: ignore[union-attr]
