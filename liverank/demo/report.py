"""The demo's report: ``report.md``, ``report.json`` and PNG plots, from one live run.

- Cadences: ``liverank train replay`` on the samples the run landed (daily, 2-hour, 15-minute:
  every window scored by the model each cadence would serve, then trained on).
- Freshness per stage for every window the incremental trainer published, in wall seconds
  measured in the run: closed (the publisher passed the window's end + click window +
  lateness) → landed (``_SUCCESS``) → published (LATEST) → serving (the scorer answers with it).
  ``freshness_p50_s``/``p99_s`` are live-equivalent, per sample: the event-time wait a live
  stream imposes (window end + click window + lateness − event time) plus that window's
  measured processing.
- Online: the serving model's AUC on the requests the scorer answered, against the simulator's
  true outcomes; the true probabilities' AUC is the ceiling any model can reach.
- Admission: the 15-minute replay with hard, Poisson and dynamic-L1 admission.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liverank.demo.fleet import Fleet
from liverank.demo.player import PlayStats
from liverank.demo.run import DAY, DemoOptions, Observed, say
from liverank.documents import to_json
from liverank.settings import Settings
from snapshots.layout import WINDOW_SECONDS, parse_window_folder, window_start
from snapshots.samples import read_completed
from streams.events import INPUT_TOPICS, Invalid, parse_event
from streams.reference import EXACT_FEATURES, feature_differences, reference_features
from trainer.checkpoints import parse_version
from trainer.metrics import auc

CADENCES = ("daily", "2h", "15min")
COLOURS = {"daily": "#d62728", "2h": "#ff7f0e", "15min": "#2ca02c"}
STAGES = ("landing", "training", "pickup", "total")


@dataclass
class LiveRun:
    settings: Settings
    options: DemoOptions
    services_up_seconds: dict[str, float]
    stats: PlayStats
    observed: Observed
    history: list[dict[str, Any]]
    trainer_state: dict[str, Any]
    trainer_log: str
    offline_jobs: list[dict[str, Any]]
    worker_stats: dict[str, Any]
    scorer_metrics: str
    play_wall: tuple[float, float]
    advanced_at: float
    live_seconds: float


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "n": 0}
    array = np.asarray(values, dtype=np.float64)
    return {
        "p50": float(np.percentile(array, 50)),
        "p90": float(np.percentile(array, 90)),
        "p99": float(np.percentile(array, 99)),
        "n": len(values),
    }


# -- replays -------------------------------------------------------------------------------


def run_replays(live: LiveRun, fleet: Fleet, out: Path) -> dict[str, dict[str, Any]]:
    """The cadence replay (hard admission) and, unless turned off, the 15-minute replay with
    Poisson and with dynamic-L1 admission; two at a time, one thread each."""
    samples = live.settings.samples_root
    jobs: dict[str, tuple[list[str], dict[str, str]]] = {
        "cadences": ([], {}),
    }
    if live.options.admission:
        for mode in ("poisson", "dynamic_l1"):
            jobs[f"admission-{mode}"] = (
                ["--cadence", "15min"],
                {"LIVERANK_ADMISSION__MODE": mode},
            )

    def replay(name: str) -> dict[str, Any]:
        extra, env = jobs[name]
        target = out / f"replay-{name}.json"
        say(f"replay {name} on the landed samples")
        fleet.run(
            f"replay-{name}",
            "train",
            "replay",
            "--samples",
            samples,
            "--out",
            str(target),
            *extra,
            env={**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
        return dict(json.loads(target.read_text()))

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(jobs, pool.map(replay, jobs), strict=True))
    return results


# -- measures ------------------------------------------------------------------------------


def freshness(live: LiveRun) -> dict[str, Any]:
    """Per-stage wall seconds for every window an incremental version published, and the
    live-equivalent event → serving freshness per sample (see the module docstring)."""
    rules = live.settings.labels
    wait = rules.click_window + rules.allowed_lateness
    history = sorted(live.history, key=lambda h: h["at"])
    served = sorted(live.observed.versions.items(), key=lambda kv: kv[1])
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    per_window: dict[float, float] = {}
    for folder, landed in live.observed.windows.items():
        start = parse_window_folder(folder)
        end = start + WINDOW_SECONDS
        published = next((h for h in history if h["event_time"] >= end - 1e-6), None)
        if published is None or "-incr-" not in published["version"]:
            continue  # covered by a daily base only (the first day), or never published
        serving = next((at for v, at in served if parse_version(v)[0] >= end - 1e-6), None)
        if serving is None:
            continue
        closed = live.stats.wall_at(end + wait) or live.advanced_at
        landing = max(0.0, landed - closed)
        training = max(0.0, published["at"] - landed)
        pickup = max(0.0, serving - published["at"])
        for name, value in zip(STAGES, (landing, training, pickup), strict=False):
            stages[name].append(value)
        stages["total"].append(landing + training + pickup)
        per_window[start] = landing + training + pickup
    live_equivalent = [
        start + WINDOW_SECONDS + wait - row["ts"] + per_window[start]
        for row in live.stats.truth
        if (start := window_start(row["ts"])) in per_window
    ]
    ages = [
        (answer.ts - parse_version(answer.version)[0]) / 60 for answer in live.stats.served.values()
    ]
    return {
        "stages_s": {name: _percentiles(values) for name, values in stages.items()},
        "stage_values_s": stages,
        "live_equivalent_s": _percentiles(live_equivalent),
        "event_wait_s": wait,
        "model_age_event_minutes": _percentiles(ages),
        "windows": len(per_window),
    }


def online(live: LiveRun) -> dict[str, Any]:
    """The served scores against the true outcomes, by day; the true probabilities' AUC."""
    first = live.stats.first_ts or 0.0
    day0 = first - first % DAY
    by_day: dict[int, dict[str, list[float]]] = {}
    oracle: dict[str, list[float]] = {"click": [], "ctcvr": [], "p_click": [], "p_ctcvr": []}
    for row in live.stats.truth:
        day = int((row["ts"] - day0) // DAY)
        ctcvr = float(row["click"] * row["conversion"])
        if day >= 1:
            oracle["click"].append(row["click"])
            oracle["ctcvr"].append(ctcvr)
            oracle["p_click"].append(row["p_click"])
            oracle["p_ctcvr"].append(row["p_click"] * row["p_conversion"])
        answer = live.stats.served.get(row["request_id"])
        if answer is None or row["anchor_id"] not in answer.scores:
            continue
        p_ctr, p_ctcvr = answer.scores[row["anchor_id"]]
        entry = by_day.setdefault(day + 1, {"click": [], "ctcvr": [], "p_ctr": [], "p_ctcvr": []})
        entry["click"].append(row["click"])
        entry["ctcvr"].append(ctcvr)
        entry["p_ctr"].append(p_ctr)
        entry["p_ctcvr"].append(p_ctcvr)
    days = {
        str(day): {
            "impressions": len(v["click"]),
            "ctr": auc(np.array(v["click"]), np.array(v["p_ctr"])),
            "ctcvr": auc(np.array(v["ctcvr"]), np.array(v["p_ctcvr"])),
        }
        for day, v in sorted(by_day.items())
    }
    ceiling = {
        "ctr": auc(np.array(oracle["click"]), np.array(oracle["p_click"])),
        "ctcvr": auc(np.array(oracle["ctcvr"]), np.array(oracle["p_ctcvr"])),
    }
    return {"by_day": days, "true_probability_auc": ceiling}


INCREMENTAL_LINE = re.compile(r"window \S+: ([\d,]+) samples \(([^)]*)\), ([\d.]+)s")


def feature_audit(live: LiveRun) -> dict[str, Any]:
    """The samples that carry the stream's own features (requests the scorer did not answer)
    against the offline reference over the same events: how many are exactly as of their
    impression, and which features differ where not."""
    events = []
    for topic, raw in live.stats.published:
        event = parse_event(topic, raw)
        if not isinstance(event, Invalid):
            events.append(event)
    expected = reference_features(events)
    columns = ["sample_id", "request_id", *EXACT_FEATURES]
    rows = [
        row
        for row in read_completed(live.settings.samples_root, columns).to_pylist()
        if row["request_id"] not in live.stats.served
    ]
    ids = {row["sample_id"] for row in rows}
    wrong = feature_differences(rows, {k: v for k, v in expected.items() if k in ids})
    differing = {sample_id for sample_id, _ in wrong}
    by_feature = Counter(name for _, name in wrong)
    return {
        "samples": len(rows),
        "exact": len(rows) - len(differing),
        "differing_by_feature": dict(by_feature.most_common()),
    }


def throughput(live: LiveRun) -> dict[str, Any]:
    began, ended = live.play_wall
    events_in = sum(n for t, n in live.worker_stats["events_in"].items() if t in INPUT_TOPICS)
    trains = [
        (int(m.group(1).replace(",", "")), float(m.group(3)))
        for m in INCREMENTAL_LINE.finditer(live.trainer_log)
    ]
    latencies = [a.seconds * 1000 for a in live.stats.served.values()]
    degraded = sum(a.degraded for a in live.stats.served.values())
    return {
        "streams": {
            "events_published": live.stats.events,
            "events_in": events_in,
            "events_per_second": events_in / max(ended - began, 1e-9),
            "publisher_held_seconds": live.stats.held_seconds,
        },
        "trainer": {
            "incremental_versions": len(trains),
            "incremental_seconds": _percentiles([s for _, s in trains]),
            "incremental_samples": _percentiles([float(n) for n, _ in trains]),
            "offline_jobs": live.offline_jobs,
        },
        "scorer": {
            "requests": live.stats.requests,
            "scored": live.stats.scored,
            "errors": live.stats.score_errors,
            "degraded": degraded,
            "round_trip_ms": _percentiles(latencies),
            "snapshots_written": _metric(live.scorer_metrics, "liverank_scorer_snapshots_written"),
            "snapshots_dropped": _metric(live.scorer_metrics, "liverank_scorer_snapshots_dropped"),
        },
    }


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def join_series(live: LiveRun) -> list[dict[str, float]]:
    """Join rate between successive monitor samples (clicks that found their impression)."""
    out = []
    previous = None
    for point in live.observed.series:
        if point["watermark"] is None:
            continue
        if previous is not None and point["clicks"] - previous["clicks"] >= 50:
            joined = point["joined_clicks"] - previous["joined_clicks"]
            out.append(
                {
                    "event_time": point["watermark"],
                    "join_rate": joined / (point["clicks"] - previous["clicks"]),
                    "pending": point["pending"],
                }
            )
            previous = point
        elif previous is None:
            previous = point
    return out


# -- plots ---------------------------------------------------------------------------------


def plot_cadences(replay: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    windows = replay["windows"]
    times = _times([w["start"] for w in windows])
    figure, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for axis, metric, title in zip(axes, ("ctr", "ctcvr"), ("CTR AUC", "CTCVR AUC"), strict=True):
        for cadence in CADENCES:
            values = np.array([_nan(w[cadence][metric]) for w in windows], dtype=np.float64)
            smooth = _rolling(values, 8)
            mean = replay["summary"][cadence][metric]
            axis.plot(times, values, color=COLOURS[cadence], alpha=0.15, linewidth=0.8)
            axis.plot(
                times,
                smooth,
                color=COLOURS[cadence],
                linewidth=1.8,
                label=f"{cadence} (mean {mean:.4f})",
            )
        axis.set_ylabel(title)
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right")
    axes[0].set_title(
        "Progressive AUC by 15-minute window (2-hour rolling mean; faint: per window)"
    )
    axes[1].xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))  # type: ignore[no-untyped-call]
    axes[1].set_xlabel("event time (UTC)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_join_rate(series: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 3.5))
    if series:
        times = _times([p["event_time"] for p in series])
        axis.plot(times, [p["join_rate"] for p in series], color="#1f77b4")
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("join rate")
    axis.set_xlabel("event time (watermark, UTC)")
    axis.set_title("Clicks joined to their impression, between successive samples of the run")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_freshness(fresh: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = fresh["stage_values_s"]
    labels = [
        "closed → landed",
        "landed → published",
        "published → serving",
        "closed → serving",
    ]
    figure, axis = plt.subplots(figsize=(9, 4))
    data = [values[s] or [math.nan] for s in STAGES]
    axis.boxplot(data, vert=False, showfliers=True)
    axis.set_yticks(range(1, len(labels) + 1), labels)
    axis.set_xlabel("wall seconds (measured in the run)")
    axis.set_title(f"Freshness per stage over {fresh['windows']} incrementally published windows")
    axis.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_admission(admission: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(admission)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    positions = np.arange(len(modes))
    left.bar(positions - 0.2, [admission[m]["ctr"] for m in modes], 0.4, label="CTR")
    left.bar(positions + 0.2, [admission[m]["ctcvr"] for m in modes], 0.4, label="CTCVR")
    low = min(min(admission[m]["ctr"], admission[m]["ctcvr"]) for m in modes)
    left.set_ylim(max(0.5, low - 0.02), None)
    left.set_xticks(positions, modes)
    left.set_ylabel("mean AUC (15-minute replay)")
    left.legend()
    right.bar(positions, [admission[m]["model_ids"] for m in modes], color="#7f7f7f")
    right.set_xticks(positions, modes)
    right.set_ylabel("IDs in the model")
    figure.suptitle("Feature admission: accuracy and model size")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _times(seconds: list[float]) -> np.ndarray:
    """Epoch seconds as datetimes matplotlib plots on a time axis (UTC)."""
    return np.array(seconds, dtype=np.float64).astype("datetime64[s]")


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _rolling(values: np.ndarray, width: int) -> np.ndarray:
    out = np.full_like(values, np.nan)
    for i in range(len(values)):
        window = values[max(0, i - width + 1) : i + 1]
        finite = window[np.isfinite(window)]
        if finite.size:
            out[i] = finite.mean()
    return out


# -- the report ----------------------------------------------------------------------------


def write_report(live: LiveRun, fleet: Fleet) -> Path:
    out = live.options.report.resolve()
    out.mkdir(parents=True, exist_ok=True)
    replays = run_replays(live, fleet, live.settings.home)
    cadences = replays["cadences"]
    summary = cadences["summary"]
    admission = {
        "hard": {
            "ctr": summary["15min"]["ctr"],
            "ctcvr": summary["15min"]["ctcvr"],
            "model_ids": cadences["model_ids"],
            "model_bytes": cadences["model_bytes"],
        }
    }
    for name, document in replays.items():
        if name.startswith("admission-"):
            entry = document["summary"]["15min"]
            admission[document["admission"]] = {
                "ctr": entry["ctr"],
                "ctcvr": entry["ctcvr"],
                "model_ids": document["model_ids"],
                "model_bytes": document["model_bytes"],
            }
    fresh = freshness(live)
    served = online(live)
    audit = feature_audit(live)
    speed = throughput(live)
    joins = join_series(live)
    final_join = live.worker_stats.get("join_rate")
    document = {
        "cadence_auc": {
            c: {
                "ctr": summary[c]["ctr"],
                "ctcvr": summary[c]["ctcvr"],
                "ctr_std": summary[c]["ctr_std"],
                "ctcvr_std": summary[c]["ctcvr_std"],
                "ctr_pooled": summary[c]["ctr_pooled"],
                "ctcvr_pooled": summary[c]["ctcvr_pooled"],
                "windows": summary[c]["windows"],
            }
            for c in CADENCES
        },
        "gap_15min_minus_daily_ctr": summary["15min"]["ctr"] - summary["daily"]["ctr"],
        "paired": cadences["paired"],
        # No model beats the true probabilities on the same impressions; a replay that does
        # learned from information the samples should not carry (read after the impression).
        "beats_true_probabilities": summary["15min"]["ctr_pooled"]
        > served["true_probability_auc"]["ctr"],
        "segments": cadences["segments"],
        "stream_features": audit,
        "join_rate": final_join,
        "freshness_p50_s": fresh["live_equivalent_s"]["p50"],
        "freshness_p99_s": fresh["live_equivalent_s"]["p99"],
        "freshness": {k: v for k, v in fresh.items() if k != "stage_values_s"},
        "samples": cadences["samples"],
        "online": served,
        "admission": admission,
        "throughput": speed,
        "run": {
            "days": live.options.days,
            "users": live.options.users,
            "anchors": live.options.anchors,
            "seed": live.options.seed,
            "speed": live.options.speed,
            "score_fraction": live.options.score_fraction,
            "events": live.stats.events,
            "live_seconds": live.live_seconds,
            "services_up_seconds": live.services_up_seconds,
            "dead_letters": live.worker_stats.get("dead_letters"),
            "samples_by_version": live.worker_stats.get("samples_by_version"),
            "last_gate": live.trainer_state.get("last_gate"),
            "versions_published": len(live.history),
        },
    }
    (out / "report.json").write_text(to_json(document))
    plot_cadences(cadences, out / "cadence_auc.png")
    plot_join_rate(joins, out / "join_rate.png")
    plot_freshness(fresh, out / "freshness.png")
    if len(admission) > 1:
        plot_admission(admission, out / "admission.png")
    markdown = out / "report.md"
    markdown.write_text(_markdown(document, live))
    return markdown


def _f(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _markdown(doc: dict[str, Any], live: LiveRun) -> str:
    run = doc["run"]
    cad = doc["cadence_auc"]
    fresh = doc["freshness"]
    speed = doc["throughput"]
    lines = [
        "# liverank demo report",
        "",
        f"{run['days']:g} simulated days ({run['users']:,d} users and {run['anchors']:,d} "
        f"anchors at the start, seed {run['seed']}), {run['events']:,d} events published at "
        f"{run['speed']:g}x event time; {doc['samples']:,d} samples landed; live run "
        f"{run['live_seconds']:.0f} s. Reproduce: `make demo` (or `liverank demo`).",
        "",
        "## Update cadence (progressive validation on the landed samples)",
        "",
        "Each window is scored by the model each cadence would be serving, then trained on;"
        " means over the windows after the first day.",
        "",
        "| cadence | CTR AUC (± sd) | CTCVR AUC (± sd) | CTR pooled | CTCVR pooled |",
        "|---|---|---|---|---|",
    ]
    for c in CADENCES:
        e = cad[c]
        lines.append(
            f"| {c} | {_f(e['ctr'])} (± {_f(e['ctr_std'])}) | {_f(e['ctcvr'])} "
            f"(± {_f(e['ctcvr_std'])}) | {_f(e['ctr_pooled'])} | {_f(e['ctcvr_pooled'])} |"
        )
    gap = doc["gap_15min_minus_daily_ctr"]
    ceiling = doc["online"]["true_probability_auc"]
    ordered = cad["15min"]["ctr"] > cad["2h"]["ctr"] > cad["daily"]["ctr"]
    lines += [
        "",
        f"15min − daily CTR AUC: **{_f(gap)}**; ordering 15min > 2h > daily: "
        f"**{'holds' if ordered else 'does not hold'}**. The simulator's true probabilities "
        f"reach CTR AUC {_f(ceiling['ctr'])} and CTCVR AUC {_f(ceiling['ctcvr'])} on the "
        "same days: no model can beat that, so the room a fresher model has is the distance "
        "between the daily model and this ceiling.",
        "",
        "Paired on the same windows (the windows' own swing cancels out):",
        "",
        "| fresher − staler | CTR AUC diff (se) | windows won | CTCVR AUC diff (se) | won |",
        "|---|---|---|---|---|",
    ]
    for pair, e in doc["paired"].items():
        lines.append(
            f"| {pair.replace('-', ' − ')} | {e['ctr_diff']:+.4f} ({_f(e['ctr_se'])}) | "
            f"{int(e['ctr_won'])}/{int(e['ctr_windows'])} | {e['ctcvr_diff']:+.4f} "
            f"({_f(e['ctcvr_se'])}) | {int(e['ctcvr_won'])}/{int(e['ctcvr_windows'])} |"
        )
    lines += [
        "",
        "![cadence AUC](cadence_auc.png)",
        "",
    ]
    if doc["beats_true_probabilities"]:
        lines += [
            "> **Warning: these AUCs are not trustworthy.** The replayed model beats the true "
            "probabilities (pooled CTR AUC "
            f"{_f(cad['15min']['ctr_pooled'])} > {_f(ceiling['ctr'])}), which only a model that "
            "sees information from after the impression can do: the landed samples carry "
            "features read after their impression. The online AUC below (the same model "
            "family scoring requests before the fact) is the honest figure.",
            "",
        ]
    audit = doc["stream_features"]
    share = audit["exact"] / audit["samples"] if audit["samples"] else math.nan
    lines += [
        f"Samples of requests the scorer did not answer carry the workers' own features: "
        f"**{audit['exact']:,d} of {audit['samples']:,d} ({_f(100 * share, 2)}%)** have "
        "exactly the user and user×anchor features an offline pass over the same events gives "
        "at their impression (no event after the impression counted)."
        + (
            " Differing values by feature: "
            + ", ".join(f"{k} {v:,d}" for k, v in audit["differing_by_feature"].items())
            + "."
            if audit["differing_by_feature"]
            else ""
        ),
        "",
        "### New users and new anchors (IDs absent from every earlier day)",
        "",
        "| segment | samples | " + " | ".join(f"{c} CTR" for c in CADENCES) + " |",
        "|---|---|" + "---|" * len(CADENCES),
    ]
    for segment, by_cadence in doc["segments"].items():
        count = int(next(iter(by_cadence.values()))["samples"])
        cells = " | ".join(_f(by_cadence[c]["ctr"]) for c in CADENCES)
        lines.append(f"| {segment} | {count:,d} | {cells} |")
    stages = fresh["stages_s"]
    lines += [
        "",
        "## Freshness",
        "",
        f"Over {fresh['windows']} windows the incremental trainer published, wall seconds "
        "measured in this run:",
        "",
        "| stage | p50 | p90 | p99 |",
        "|---|---|---|---|",
    ]
    names = {
        "landing": "closed → landed (`_SUCCESS`)",
        "training": "landed → published (LATEST)",
        "pickup": "published → serving (scorer)",
        "total": "closed → serving",
    }
    for stage in STAGES:
        p = stages[stage]
        lines.append(
            f"| {names[stage]} | {_f(p['p50'], 1)} | {_f(p['p90'], 1)} | {_f(p['p99'], 1)} |"
        )
    live_eq = fresh["live_equivalent_s"]
    age = fresh["model_age_event_minutes"]
    lines += [
        "",
        f"Live-equivalent event → serving freshness per sample (the event-time wait of a live "
        f"stream — to the window's end, plus the {fresh['event_wait_s']:.0f} s click window "
        f"and lateness — plus the measured processing): **p50 {_f(live_eq['p50'], 0)} s, "
        f"p99 {_f(live_eq['p99'], 0)} s**.",
        "",
        f"In this run event time went {run['speed']:g}x faster than the wall clock, so each "
        "wall second of processing aged the serving model by that many event seconds: its "
        f"age at the requests it answered was p50 {_f(age['p50'], 0)}, "
        f"p99 {_f(age['p99'], 0)} event minutes.",
        "",
        "![freshness](freshness.png)",
        "",
        "## Join rate",
        "",
        f"Clicks joined to their impression over the run: **{_f(doc['join_rate'])}**.",
        "",
        "![join rate](join_rate.png)",
        "",
        "## Serving online",
        "",
        "The scorer's scores for the requests it answered, against the simulator's outcomes:",
        "",
        "| day | impressions | CTR AUC | CTCVR AUC |",
        "|---|---|---|---|",
    ]
    for day, entry in doc["online"]["by_day"].items():
        lines.append(
            f"| {day} | {entry['impressions']:,d} | {_f(entry['ctr'])} | {_f(entry['ctcvr'])} |"
        )
    streams, trainer, scorer = speed["streams"], speed["trainer"], speed["scorer"]
    rt = scorer["round_trip_ms"]
    inc = trainer["incremental_seconds"]
    lines += [
        "",
        "## Throughput and latency (same run, 2 cores shared by everything)",
        "",
        f"- Stream workers (two): {streams['events_in']:,d} events in, "
        f"{streams['events_per_second']:,.0f} events/s over the publishing phase (the "
        f"publisher waited {streams['publisher_held_seconds']:.0f} s for them).",
        f"- Incremental trainer: {trainer['incremental_versions']} versions, "
        f"p50 {_f(inc['p50'], 1)} s, p99 {_f(inc['p99'], 1)} s per version; offline jobs: "
        + ", ".join(f"{j['day']} {j['seconds']:.0f} s" for j in trainer["offline_jobs"])
        + ".",
        f"- Scorer: {scorer['scored']:,d} requests answered (24 candidates each), round trip "
        f"p50 {_f(rt['p50'], 1)} ms, p99 {_f(rt['p99'], 1)} ms; {scorer['errors']} errors, "
        f"{scorer['degraded']} degraded; snapshots written {scorer['snapshots_written']}, "
        f"dropped {scorer['snapshots_dropped']}.",
    ]
    admission = doc["admission"]
    if len(admission) > 1:
        lines += [
            "",
            "## Feature admission (15-minute replay)",
            "",
            "| admission | CTR AUC | CTCVR AUC | IDs | MiB of rows |",
            "|---|---|---|---|---|",
        ]
        for mode, entry in admission.items():
            lines.append(
                f"| {mode} | {_f(entry['ctr'])} | {_f(entry['ctcvr'])} | "
                f"{entry['model_ids']:,d} | {entry['model_bytes'] / 2**20:.2f} |"
            )
        lines += ["", "![admission](admission.png)"]
    gate = run["last_gate"] or {}
    lines += [
        "",
        "## Run",
        "",
        f"- Versions published: {run['versions_published']}; last gate decision: "
        f"{'accepted' if gate.get('accepted') else 'refused'} — {gate.get('reason', '–')}.",
        f"- Dead letters: {run['dead_letters']}; samples by version: {run['samples_by_version']}.",
        f"- Logs of every process: `{live.settings.home / 'logs'}`.",
        "",
    ]
    return "\n".join(lines)
