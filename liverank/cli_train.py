"""``liverank train ...`` and ``liverank models ...``: the trainer's jobs and the checkpoints."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from liverank.cli_common import settings_of
from liverank.documents import to_json
from liverank.settings import Settings

train_app = typer.Typer(
    help="The trainer: offline base, warm restart, 15-minute incremental updates, replay.",
    no_args_is_help=True,
)
models_app = typer.Typer(
    help="Checkpoints in the store: list, show, roll back.", no_args_is_help=True
)


_settings = settings_of


def _say(line: str) -> None:
    print(f"[train] {line}", file=sys.stderr, flush=True)


def _trainer(settings: Settings) -> Any:
    from trainer.jobs import Trainer
    from trainer.notify import KafkaNotifier

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # its reconnect chatter
    trainer = Trainer(settings, notifier=KafkaNotifier(settings), say=_say)
    if settings.trainer.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.trainer.metrics_port, registry=trainer.metrics.registry)
    return trainer


@train_app.command("offline")
def train_offline(
    ctx: typer.Context,
    day: Annotated[str, typer.Option(help="The event-time day to train on (YYYY-MM-DD, UTC).")],
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start from scratch, not from the last base.")
    ] = False,
) -> None:
    """Train the day's closed windows with the full admission thresholds → an offline base.

    The base is written and verified but not served yet: `liverank train warm-restart` serves
    it and restarts the incremental chain from it.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    trainer = _trainer(_settings(ctx))
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} samples"),
        TextColumn("{task.fields[rate]:,.0f} samples/s"),
        TimeRemainingColumn(),
        transient=False,
        console=Console(stderr=True),  # standard output is the version alone, for scripts
    ) as bar:
        task = bar.add_task(f"offline {day}", total=None, rate=0.0)
        began = datetime.now(UTC)

        def progress(done: int, total: int) -> None:
            seconds = (datetime.now(UTC) - began).total_seconds()
            bar.update(task, completed=done, total=total, rate=done / max(seconds, 1e-9))

        manifest = trainer.offline(day, fresh=fresh, progress=progress)
    typer.echo(manifest["version"])


@train_app.command("warm-restart")
def train_warm_restart(
    ctx: typer.Context,
    base: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="The offline version to restart from (default: the newest)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Serve the base even if the gate refuses it.")
    ] = False,
) -> None:
    """Load a base, sync its vocabulary (admit the day's new IDs, evict stale ones), serve it
    and reset the incremental chain to it."""
    manifest = _trainer(_settings(ctx)).warm_restart(base, force=force)
    typer.echo(manifest["version"])


@train_app.command("incremental")
def train_incremental(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Publish the next closed window, then exit.")
    ] = False,
) -> None:
    """Publish a gated model for every closed 15-minute window, as the windows close."""
    trainer = _trainer(_settings(ctx))
    try:
        results = trainer.incremental(once=once)
    except KeyboardInterrupt:
        _say("stopped")
        return
    for result in results:
        typer.echo(result.version or f"refused: {result.decision.reason}")


@train_app.command("replay")
def train_replay(
    ctx: typer.Context,
    samples: Annotated[str, typer.Option(help="Samples root (local path or URI).")],
    cadence: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="15min, 2h, daily; repeat for several (default: all three)."),
    ] = None,
    warmup_days: Annotated[
        float, typer.Option(help="Days trained on but left out of the means.")
    ] = 1.0,
    objective: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="esmm or separate (a CVR model trained on clicks only)."),
    ] = None,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Write every window's AUCs and the means here (JSON)."),
    ] = None,
) -> None:
    """Progressive validation: each window scored by the model each cadence would be serving,
    then trained on. Prints AUC by window and the means."""
    from trainer.replay import public_windows, replay

    settings = _settings(ctx)
    if objective is not None:
        settings = settings.model_copy(
            update={"trainer": settings.trainer.model_copy(update={"objective": objective})}
        )
    cadences = cadence or ["15min", "2h", "daily"]
    result, summary = replay(
        settings, samples, cadences, warmup_days, say=lambda line: typer.echo(line)
    )
    typer.echo(
        f"trained {result.samples:,d} samples in {result.train_seconds:.1f}s; model: "
        f"{result.model_ids:,d} IDs ({result.model_bytes / 2**20:.1f} MiB of rows)"
    )
    for name, entry in summary.items():
        typer.echo(
            f"cadence {name}: auc_ctr mean={entry['ctr']:.4f} (±{entry['ctr_std']:.4f}) "
            f"pooled={entry['ctr_pooled']:.4f}  auc_ctcvr mean={entry['ctcvr']:.4f} "
            f"(±{entry['ctcvr_std']:.4f}) pooled={entry['ctcvr_pooled']:.4f}  "
            f"windows={int(entry['windows'])}"
        )
    paired = result.paired()
    for pair, e in paired.items():
        typer.echo(
            f"paired {pair}: auc_ctr diff={e['ctr_diff']:+.4f} (se {e['ctr_se']:.4f}, won "
            f"{int(e['ctr_won'])}/{int(e['ctr_windows'])})  auc_ctcvr diff="
            f"{e['ctcvr_diff']:+.4f} (se {e['ctcvr_se']:.4f}, won {int(e['ctcvr_won'])}/"
            f"{int(e['ctcvr_windows'])})"
        )
    segments = result.segments()
    for segment, by_cadence in segments.items():
        aucs = "  ".join(
            f"{c} ctr={v['ctr']:.4f} ctcvr={v['ctcvr']:.4f}" for c, v in by_cadence.items()
        )
        count = int(next(iter(by_cadence.values()))["samples"]) if by_cadence else 0
        typer.echo(f"segment {segment} ({count:,d} samples): {aucs}")
    if out is not None:
        document = {
            "objective": settings.trainer.objective,
            "admission": settings.admission.mode,
            "samples": result.samples,
            "train_seconds": result.train_seconds,
            "model_ids": result.model_ids,
            "model_bytes": result.model_bytes,
            "summary": summary,
            "paired": paired,
            "segments": segments,
            "windows": public_windows(result),
        }
        out.write_text(to_json(document))


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Every version in the checkpoint store, oldest first; `*` marks LATEST."""
    from trainer.checkpoints import CheckpointError, CheckpointStore

    store = CheckpointStore(_settings(ctx).checkpoint_root)
    latest = store.latest()
    rows = []
    for version in store.versions():
        try:
            manifest = store.manifest(version)
            metrics = manifest.get("metrics", {})
            row = {
                "version": version,
                "latest": latest is not None and latest.version == version,
                "kind": manifest.get("kind"),
                "job": manifest.get("job"),
                "samples": manifest.get("samples"),
                "auc_ctr": metrics.get("auc_ctr"),
                "auc_ctcvr": metrics.get("auc_ctcvr"),
                "ok": True,
            }
        except CheckpointError as exc:
            row = {"version": version, "latest": False, "ok": False, "error": str(exc)}
        rows.append(row)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no versions under {store.uri}")
    for row in rows:
        mark = "*" if row["latest"] else " "
        if not row["ok"]:
            typer.echo(f"{mark} {row['version']}  BROKEN: {row['error']}")
            continue
        auc = row["auc_ctr"]
        typer.echo(
            f"{mark} {row['version']}  {row['job']:<12} samples={row['samples']!s:>7} "
            f"auc_ctr={auc if auc is None else f'{auc:.4f}'}"
        )


@models_app.command("show")
def models_show(
    ctx: typer.Context, version: Annotated[str, typer.Argument(help="A version, or LATEST.")]
) -> None:
    """A version's manifest (verified)."""
    from trainer.checkpoints import CheckpointStore

    store = CheckpointStore(_settings(ctx).checkpoint_root)
    if version == "LATEST":
        latest = store.verify_latest()
        if latest is None:
            raise typer.BadParameter("LATEST does not exist yet")
        version = latest.version
    typer.echo(json.dumps(store.manifest(version), indent=2, sort_keys=True))


@models_app.command("rollback")
def models_rollback(
    ctx: typer.Context, version: Annotated[str, typer.Argument(help="The version to serve.")]
) -> None:
    """Point LATEST at an earlier version (after verifying it); scorers follow."""
    from trainer.checkpoints import CheckpointStore
    from trainer.notify import KafkaNotifier

    settings = _settings(ctx)
    store = CheckpointStore(settings.checkpoint_root)
    latest = store.point_latest(version)
    KafkaNotifier(settings).send(store.manifest(version))
    typer.echo(f"LATEST → {latest.version}")
