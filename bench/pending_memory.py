"""Resident memory of a stream worker's negative cache holding N pending impressions.

Each pending impression carries its impression-time feature snapshot, as in the worker. Run:

    .venv/bin/python bench/pending_memory.py --impressions 1000000

Last line: ``pending_memory: impressions=<n> rss_mib=<total> baseline_mib=<before>
per_impression_bytes=<b>`` (one line).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.catalog import CATALOG
from streams.events import Impression
from streams.join import JoinCore, LabelRules


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def features(rng: random.Random) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for feature in CATALOG:
        if feature.kind == "numeric":
            out[feature.name] = round(rng.random() * 100, 3)
        elif feature.name == "u_recent_anchors":
            out[feature.name] = ",".join(f"a{rng.randrange(10**6):06d}" for _ in range(20))
        else:
            out[feature.name] = rng.choice(["music", "chat", "pk", "18-24", "f", "home"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--impressions", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = random.Random(1)
    gc.collect()
    before = rss_mib()
    core = JoinCore(LabelRules(), {})
    began = time.perf_counter()
    t0 = 1_793_491_200.0
    for i in range(args.impressions):
        ts = t0 + i * 0.001  # all within the click window: nothing closes
        event = Impression(
            f"e{i:010d}",
            ts,
            f"r{i // 8:09d}",
            f"u{rng.randrange(10**6):07d}",
            f"a{i % 8000:06d}",
            "home",
            i % 8,
        )
        core.process(event, features(rng))
        if (i + 1) % 200_000 == 0:
            print(
                f"[pending_memory] {i + 1:,d} pending, rss {rss_mib():,.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
    gc.collect()
    after = rss_mib()
    elapsed = time.perf_counter() - began
    pending = core.open_count()
    assert pending == args.impressions, pending
    per = (after - before) * 1024 * 1024 / pending
    print(f"[pending_memory] filled in {elapsed:.1f}s", file=sys.stderr)
    print(
        f"pending_memory: impressions={pending} rss_mib={after:.0f} baseline_mib={before:.0f} "
        f"per_impression_bytes={per:.0f}"
    )


if __name__ == "__main__":
    main()
