"""Incremental latency: a window's ``_SUCCESS`` → its version in LATEST.

On a samples root of at least two days: trains the offline base on day 1, serves it (warm
restart), then for a window late on day 2 — the costliest case for ``from_base``, which
retrains today's windows so far — marks the window afresh (rewrites ``_SUCCESS`` now) and
runs the incremental job on it, once per restart policy. The job's own poll wait is not
included (add up to ``trainer.poll_interval_seconds``).

    .venv/bin/python bench/incremental.py --samples DIR [--hour 23]

Last line: ``incremental: from_base_s=<s> chained_s=<s> from_base_samples=<n>``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liverank.settings import Settings
from snapshots.layout import SUCCESS, window_folder
from trainer.data import DAY, closed_windows
from trainer.jobs import Trainer
from trainer.notify import NoNotifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", required=True)
    parser.add_argument("--hour", type=int, default=23)
    args = parser.parse_args()
    windows = closed_windows(args.samples)
    first_day = windows[0] - windows[0] % DAY
    target = first_day + DAY + args.hour * 3600 + 1800
    if target not in windows:
        sys.exit(f"window {window_folder(target)} is not closed under {args.samples}")
    day = window_folder(first_day).split("/")[0][3:]
    results = {}
    samples = 0
    for policy in ("from_base", "chained"):
        with tempfile.TemporaryDirectory() as checkpoints:
            settings = Settings(
                samples_root=args.samples,
                checkpoint_root=checkpoints,
                trainer={"restart_policy": policy},  # type: ignore[arg-type]
            )
            trainer = Trainer(settings, notifier=NoNotifier(), say=print)
            trainer.offline(day)
            trainer.warm_restart()
            trainer.save_state(last_window=target - 900)  # the chain is at the window before
            marker = Path(args.samples) / window_folder(target) / SUCCESS
            marker.write_bytes(b"")  # the window closes now
            result = trainer.incremental_window(target)
            assert result.version is not None, result.decision.reason
            results[policy] = result.latency_seconds or float("nan")
            if policy == "from_base":
                samples = result.samples
            print(f"{policy}: {results[policy]:.2f}s ({result.samples:,d} samples trained)")
    print(
        f"incremental: from_base_s={results['from_base']:.2f} "
        f"chained_s={results['chained']:.2f} from_base_samples={samples}"
    )


if __name__ == "__main__":
    main()
