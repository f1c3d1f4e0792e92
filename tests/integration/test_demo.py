"""The demo, small: every part of the system runs end to end on the real services, the
report has what it promises, and nothing the demo started is left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local.services import LocalServices
from liverank.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def processes_of(run: str) -> list[int]:
    """Processes whose environment names the demo run's topics."""
    marker = f"LIVERANK_KAFKA__TOPIC_PREFIX={run}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.timeout(900)
def test_smoke_demo_runs_everything_and_reports(
    settings: Settings, services: LocalServices, tmp_path: Path
) -> None:
    report = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVERANK_")}
    env["LIVERANK_HOME"] = str(settings.home)
    done = subprocess.run(
        [sys.executable, "-m", "liverank.cli", "demo", "--smoke", "--keep-services",
         "--report", str(report)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=840, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert "incremental trainer starts" in done.stderr

    document = json.loads((report / "report.json").read_text())
    for cadence in ("daily", "2h", "15min"):
        for metric in ("ctr", "ctcvr"):
            assert 0.0 < document["cadence_auc"][cadence][metric] <= 1.0
    assert 0.9 <= document["join_rate"] <= 1.0
    assert document["samples"] > 1000
    assert 0 < document["freshness_p50_s"] <= document["freshness_p99_s"]
    assert document["freshness"]["windows"] > 0
    assert document["throughput"]["scorer"]["scored"] > 0  # the scorer served the simulator
    assert document["throughput"]["scorer"]["errors"] == 0
    assert document["throughput"]["scorer"]["snapshots_written"] > 0
    assert set(document["admission"]) == {"hard", "poisson", "dynamic_l1"}
    assert document["paired"]["15min-daily"]["ctr_windows"] > 0
    audit = document["stream_features"]  # the workers' own features, as of each impression
    assert audit["samples"] > 500
    assert audit["exact"] == audit["samples"], audit["differing_by_feature"]
    assert document["run"]["versions_published"] >= 3  # base, incremental, next base
    for name in ("cadence_auc", "join_rate", "freshness", "admission"):
        png = (report / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, name
    markdown = (report / "report.md").read_text()
    assert "| 15min |" in markdown and "![cadence AUC](cadence_auc.png)" in markdown

    run = json.loads((settings.home / "demo" / "run.json").read_text())["run"]
    assert processes_of(run) == []  # workers, scorer, trainer and jobs all stopped
