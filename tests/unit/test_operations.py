"""The operators' view: ``liverank status`` and the Grafana dashboard over the real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from liverank.settings import Settings
from liverank.status import collect, render
from scorer.service import ScorerMetrics
from streams.metrics import StreamMetrics
from tests.unit.test_learner import synthetic
from tests.unit.test_scorer import publish
from trainer.checkpoints import CheckpointStore
from trainer.jobs import TrainerMetrics
from trainer.learner import Learner

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "liverank.json"


def exported_names(registry: CollectorRegistry) -> set[str]:
    """The series names Prometheus scrapes from ``registry`` (labelled or not)."""
    names = set()
    for family in registry.collect():
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_sum", "_count"],
        }.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_every_dashboard_query_names_a_metric_we_export() -> None:
    exported = set()
    for metrics in (StreamMetrics(), TrainerMetrics(), ScorerMetrics()):
        exported |= exported_names(metrics.registry)
    dashboard = json.loads(DASHBOARD.read_text())
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried.update(re.findall(r"liverank_[a-z_]+", target["expr"]))
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, sorted(queried - exported)
    # Workers, trainer and scorer all have a panel.
    assert {name.split("_")[1] for name in queried} >= {"stream", "trainer", "scorer"}


def test_status_reports_each_part_and_survives_what_is_down(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        kafka={"bootstrap_servers": "127.0.0.1:1"},  # type: ignore[arg-type]
        scorer={"port": 1},  # type: ignore[arg-type]
        trainer={"seed": 3},  # type: ignore[arg-type]
    )
    (tmp_path / "streams").mkdir()
    stats = {
        "worker": "w1",
        "written_at": 1000.0,
        "clicks": 10,
        "joined_clicks": 9,
        "pending_samples": 42,
        "partitions": {"0": {"watermark": 1793493000.0, "newest_event": 1793493060.0,
                             "lag_seconds": 60.0}},
    }  # fmt: skip
    (tmp_path / "streams" / "w1.json").write_text(json.dumps(stats))
    learner = Learner(settings)
    learner.fit(synthetic(500, 1), "incremental")
    store = CheckpointStore(settings.checkpoint_root)
    version = publish(store, learner, 1)  # window end 1793492100
    gate = {"window": "dt=x", "accepted": False, "reason": "AUC fell", "at": "now"}
    store.root.write_atomic(
        store.root.join("trainer.json"), json.dumps({"last_gate": gate}).encode()
    )

    facts = collect(settings, now=2000.0)
    assert "error" in facts["kafka"] and "error" in facts["scorer"]
    assert facts["streams"]["join_rate"] == 0.9
    assert facts["model"]["latest"]["version"] == version
    assert facts["model"]["latest"]["event_age_seconds"] == 1793493000.0 - 1793492100.0
    text = render(facts)
    for expected in (
        "kafka        unreachable",
        "join rate 0.9000",
        version,
        "REFUSED",
        "AUC fell",
    ):
        assert expected in text, (expected, text)


def test_documents_are_strict_json_with_null_for_non_finite_numbers() -> None:
    from liverank.documents import to_json

    text = to_json({"auc": float("nan"), "runs": [1.5, float("inf")], "n": 3})
    assert json.loads(text) == {"auc": None, "runs": [1.5, None], "n": 3}
    assert "NaN" not in text and "Infinity" not in text
