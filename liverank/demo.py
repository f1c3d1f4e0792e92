"""``liverank demo``: the system end to end on simulated live traffic, with a report.

What runs today: the local services, the topics, and the simulator publishing a few days of
traffic to Kafka at high event-time speed; the report gives the traffic's statistics. Stream
workers, trainer and scorer join the demo as they are built.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from deploy.local.services import LocalServices, print_progress
from liverank.settings import Settings
from liverank.simulator.run import run_simulation
from streams.topics import ensure_topics


def run_demo(
    settings: Settings, *, days: float, users: int, anchors: int, seed: int, report: Path
) -> Path:
    """Run the demo; return the path of the report's markdown."""
    began = time.monotonic()
    timings = LocalServices(settings, progress=print_progress).up()
    created = ensure_topics(settings)
    print(f"[demo] topics ready ({len(created)} created)", file=sys.stderr, flush=True)
    side = settings.home / "demo"
    stats = run_simulation(
        settings,
        days=days,
        users=users,
        anchors=anchors,
        seed=seed,
        start="2026-11-01",
        out=None,
        speed=0.0,
        truth=side,
        dry_run=False,
    )
    report.mkdir(parents=True, exist_ok=True)
    summary = {
        "services_up_seconds": timings,
        "simulation": {"days": days, "users": users, "anchors": anchors, "seed": seed},
        "traffic": stats.as_dict(),
        "publish_seconds": stats.generate_seconds,
        "events_per_second": stats.events / stats.generate_seconds if stats.generate_seconds else 0,
        "wall_seconds": time.monotonic() - began,
    }
    (report / "report.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    markdown = report / "report.md"
    markdown.write_text(
        "# liverank demo report\n\n"
        f"Simulated {days:g} day(s), {users} users and {anchors} anchors at the start, "
        f"seed {seed}; "
        f"published to Kafka at {summary['events_per_second']:,.0f} events/s.\n\n"
        "```\n" + stats.format() + "\n```\n\n"
        "Ground truth and profiles: `" + str(side) + "`.\n"
    )
    return markdown
