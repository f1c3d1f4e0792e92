"""The training jobs on sample windows landed by the workers' pipeline (files, no services)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from liverank.settings import Settings
from snapshots.layout import window_folder
from trainer.data import WindowReader, closed_windows
from trainer.jobs import Trainer, TrainerError
from trainer.notify import NoNotifier
from trainer.replay import ReplayResult, replay

DAY2 = 1793577600.0  # 2026-11-02


def make_trainer(samples: str, checkpoints: Path, **trainer: object) -> Trainer:
    settings = Settings(
        samples_root=samples,
        checkpoint_root=str(checkpoints),
        trainer={"seed": 3, **trainer},  # type: ignore[arg-type]
    )
    return Trainer(settings, notifier=NoNotifier(), say=lambda line: None)


def busy_window(samples: str) -> float:
    """The day-2 window with the most samples (an evening one)."""
    windows = [w for w in closed_windows(samples) if DAY2 <= w < DAY2 + 86400]
    sizes = {}
    for w in windows:
        folder = Path(samples) / window_folder(w)
        sizes[w] = sum(pq.read_metadata(p).num_rows for p in folder.glob("*.parquet"))
    return max(sizes, key=lambda w: sizes[w])


def test_incremental_needs_a_base_first(landed_days: str, tmp_path: Path) -> None:
    trainer = make_trainer(landed_days, tmp_path)
    with pytest.raises(TrainerError, match="warm-restart"):
        trainer.incremental(once=True)


@pytest.mark.parametrize("policy", ["from_base", "chained"])
def test_offline_warm_restart_and_incremental_publish_verified_versions(
    landed_days: str, tmp_path: Path, policy: str
) -> None:
    trainer = make_trainer(landed_days, tmp_path, restart_policy=policy)
    base = trainer.offline("2026-11-01")
    assert base["kind"] == "offline" and base["samples"] > 1000
    assert trainer.store.latest() is None  # a base is not served until the warm restart
    served = trainer.warm_restart()
    assert served["base_version"] == base["version"]
    assert trainer.store.verify_latest().version == served["version"]  # type: ignore[union-attr]
    results = trainer.incremental(once=True) + trainer.incremental(once=True)
    assert [r.window_start for r in results] == [DAY2, DAY2 + 900]
    latest = trainer.store.verify_latest()
    published = [r.version for r in results if r.version]
    assert published and latest is not None and latest.version == published[-1]
    manifest = trainer.store.manifest(latest.version)
    assert manifest["kind"] == "incremental"
    assert manifest["base_version"] == served["version"]
    assert manifest["window"] == {"start": DAY2 + 900, "end": DAY2 + 1800}
    assert set(manifest["metrics"]) >= {"auc_ctr", "auc_ctcvr", "logloss_ctr", "logloss_ctcvr"}
    assert len(trainer.notifier.sent) == 1 + len(published)  # type: ignore[attr-defined]


def test_a_trainer_behind_catches_up_in_one_version_then_adopts_the_next_base(
    landed_days: str, tmp_path: Path
) -> None:
    trainer = make_trainer(landed_days, tmp_path, restart_policy="chained")
    trainer.offline("2026-11-01")
    served = trainer.warm_restart()
    day2 = [w for w in closed_windows(landed_days) if w >= DAY2]
    # One round of the loop: every closed day-2 window in one version, named by the newest.
    [result] = trainer.incremental(stop=lambda: True)
    assert result.window_start == day2[-1] and result.version is not None
    wanted = trainer._split(day2)[0].num_rows
    assert result.samples == wanted > trainer._split([day2[-1]])[0].num_rows
    assert trainer.state()["offline_base"] == served["base_version"]
    assert trainer.incremental(stop=lambda: True) == []  # nothing new: nothing published
    # The daily offline job lands a base; the running loop warm-restarts from it by itself.
    base = trainer.offline("2026-11-02")
    [after] = trainer.incremental(stop=lambda: True)  # the windows after the base's day
    state = trainer.state()
    assert state["offline_base"] == base["version"]
    restarted = trainer.store.manifest(state["base_version"])
    assert restarted["job"] == "warm-restart" and restarted["base_version"] == base["version"]
    assert after.window_start == day2[-1] > base["window"]["end"]
    latest = trainer.store.manifest(trainer.store.latest().version)  # type: ignore[union-attr]
    assert latest["base_version"] == state["base_version"]
    assert state["last_window"] == day2[-1]


def test_the_gate_refuses_a_window_whose_labels_were_flipped(
    landed_days: str, tmp_path: Path
) -> None:
    samples = tmp_path / "samples"
    shutil.copytree(landed_days, samples)
    target = busy_window(str(samples))
    for path in (samples / window_folder(target)).glob("*.parquet"):
        table = pq.read_table(path)
        flipped = pc.subtract(pa.scalar(1, pa.int8()), table["click"])
        table = table.set_column(table.schema.get_field_index("click"), "click", flipped)
        pq.write_table(table, path)
    trainer = make_trainer(str(samples), tmp_path / "checkpoints")
    trainer.offline("2026-11-01")
    trainer.warm_restart()
    before = target - 900
    assert trainer.incremental_window(before).version is not None
    latest = trainer.store.latest()
    result = trainer.incremental_window(target)
    assert result.version is None
    assert "label" in result.decision.reason or "serving" in result.decision.reason
    assert trainer.store.latest() == latest  # nothing written to LATEST
    assert trainer.state()["last_gate"]["accepted"] is False
    assert target in trainer.state()["refused"]
    # The next (good) window is published, trained without the refused one.
    assert trainer.incremental_window(target + 900).version is not None


def test_warm_restart_admits_the_serving_models_ids_and_evicts_stale_ones(
    landed_days: str, tmp_path: Path
) -> None:
    trainer = make_trainer(landed_days, tmp_path)
    trainer.offline("2026-11-01")
    trainer.warm_restart()
    for _ in range(8):
        trainer.incremental(once=True)
    serving, _ = trainer.load(trainer.store.latest().version)  # type: ignore[union-attr]
    restarted = trainer.warm_restart()
    learner, _ = trainer.load(restarted["version"])
    for name, entries in serving.vocab.vocabs.items():
        assert set(entries.rows) <= set(learner.vocab.vocabs[name].rows)


def test_replay_scores_every_window_for_every_cadence(landed_days: str) -> None:
    settings = Settings(trainer={"seed": 3})  # type: ignore[arg-type]
    lines: list[str] = []
    result, summary = replay(settings, landed_days, ["15min", "daily"], 1.0, say=lines.append)
    assert len(result.windows) == len(lines) >= 150
    assert set(summary) == {"15min", "daily"}
    for entry in summary.values():
        assert 0.55 < entry["ctr"] < 1.0
        assert entry["windows"] > 50
    first = result.windows[0]
    assert first["daily"]["ctr"] == pytest.approx(first["15min"]["ctr"])  # same untrained model
    # New users and anchors: in no sample of an earlier day.
    reader = WindowReader(landed_days)
    tables = {w: reader.window(w) for w in closed_windows(landed_days)}
    users = {w: t["user_id"].to_pylist() for w, t in tables.items()}
    day1_users = {u for w, ids in users.items() if w < DAY2 for u in ids}
    expected = sum(u not in day1_users for w, ids in users.items() if w >= DAY2 for u in ids)
    segments = result.segments()
    assert set(segments) == {"new_user", "new_anchor"}
    assert segments["new_user"]["15min"]["samples"] == expected > 0
    assert 0.0 < segments["new_user"]["15min"]["ctr"] < 1.0
    assert result.model_ids > 100 and result.model_bytes > 0


def test_paired_cadence_differences_are_per_window_after_warm_up() -> None:
    def window(start: float, fresh: float, stale: float) -> dict[str, object]:
        return {
            "start": start,
            "15min": {"ctr": fresh, "ctcvr": fresh},
            "daily": {"ctr": stale, "ctcvr": math.nan if start == 3 else stale},
        }

    windows = [window(0, 0.9, 0.1), window(1, 0.62, 0.60), window(2, 0.70, 0.66)]
    windows += [window(3, 0.50, 0.51)]
    result = ReplayResult(["15min", "daily"], windows=windows, warmup_until=1)
    entry = result.paired()["15min-daily"]
    # CTR: diffs 0.02, 0.04, -0.01 (the warm-up window left out): mean 0.0167,
    # sample sd 0.02517, se 0.02517 / sqrt(3) = 0.01453.
    assert entry["ctr_diff"] == pytest.approx(0.05 / 3)
    assert entry["ctr_se"] == pytest.approx(0.025166 / math.sqrt(3), rel=1e-4)
    assert entry["ctr_won"] == 2
    # CTCVR: the window without a daily AUC is not paired.
    assert entry["ctcvr_diff"] == pytest.approx(0.03)
    assert entry["ctcvr_won"] == 2 and entry["ctcvr_windows"] == 2
    assert entry["ctr_windows"] == 3
