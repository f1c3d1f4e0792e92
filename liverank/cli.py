"""The ``liverank`` command. Settings are read here, once, and passed down."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from liverank.cli_common import settings_of
from liverank.cli_train import models_app, train_app
from liverank.errors import LiverankError
from liverank.settings import Settings

app = typer.Typer(
    help="liverank: live-stream anchor ranking with a model that is never more than 15 minutes "
    "stale. Settings: LIVERANK_* environment variables and an optional TOML file (--config).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
services_app = typer.Typer(
    help="Local real Kafka, Redis and HBase on loopback.", no_args_is_help=True
)
topics_app = typer.Typer(help="Kafka topics of the event contract.", no_args_is_help=True)
streams_app = typer.Typer(
    help="Stream workers: features, label join, samples.", no_args_is_help=True
)
profiles_app = typer.Typer(help="Offline profiles in HBase.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(topics_app, name="topics")
app.add_typer(streams_app, name="streams")
app.add_typer(profiles_app, name="profiles")
app.add_typer(train_app, name="train")
app.add_typer(models_app, name="models")


_settings = settings_of


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional on 3.11
        typer.Option("--config", "-c", help="TOML settings file (default: ./liverank.toml)."),
    ] = None,
) -> None:
    ctx.obj = Settings.load(config)


ServiceNames = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Argument(help="kafka, redis, hbase (default: all three)", show_default=False),
]


@services_app.command("up")
def services_up(ctx: typer.Context, names: ServiceNames = None) -> None:
    """Start the services that are not running and wait until each one answers (idempotent)."""
    from deploy.local.services import LocalServices, print_progress

    timings = LocalServices(_settings(ctx), progress=print_progress).up(names)
    for name, seconds in timings.items():
        typer.echo(f"{name}: up ({seconds:.1f}s)")


@services_app.command("down")
def services_down(ctx: typer.Context, names: ServiceNames = None) -> None:
    """Stop the services; no process is left behind."""
    from deploy.local.services import LocalServices, print_progress

    stopped = LocalServices(_settings(ctx), progress=print_progress).down(names)
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@services_app.command("status")
def services_status(
    ctx: typer.Context,
    names: ServiceNames = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Health of each service (exit code 1 when one is not healthy)."""
    from deploy.local.services import LocalServices

    report = LocalServices(_settings(ctx)).status(names)
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        for name, facts in report.items():
            state = "healthy" if facts["healthy"] else f"DOWN ({facts.get('error')})"
            typer.echo(f"{name:6s} {facts['address']:22s} {state}")
    if not all(facts["healthy"] for facts in report.values()):
        raise typer.Exit(1)


@topics_app.command("create")
def topics_create(ctx: typer.Context) -> None:
    """Create every topic of the contract with the configured partition count (idempotent)."""
    from streams.topics import ensure_topics

    created = ensure_topics(_settings(ctx))
    typer.echo("created: " + (", ".join(created) if created else "none (all existed)"))


@topics_app.command("list")
def topics_list(ctx: typer.Context) -> None:
    """The contract's topics with their partition counts on the cluster."""
    from streams.topics import describe_topics

    for name, partitions in describe_topics(_settings(ctx)).items():
        typer.echo(f"{name:40s} {partitions if partitions is not None else 'missing'}")


@streams_app.command("worker")
def streams_worker(
    ctx: typer.Context,
    name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Worker name in stats and logs (default: host-pid)."),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning.")] = "info",
) -> None:
    """Run a stream worker; several workers form one consumer group and share partitions."""
    from streams.app import create_app, create_worker
    from streams.topics import ensure_topics

    settings = _settings(ctx)
    ensure_topics(settings)
    app_, runtime = create_app(settings, name)
    typer.echo(f"worker {runtime.name}: stats in {runtime.stats_path}", err=True)
    if settings.streams.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.streams.metrics_port, registry=runtime.metrics.registry)
    create_worker(app_, loglevel).execute_from_commandline()


@streams_app.command("advance")
def streams_advance(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="Event time: epoch seconds or ISO 8601 (UTC).")],
) -> None:
    """Move every partition's watermark to event time TO (closes a replay's windows)."""
    from streams.control import advance, parse_time

    ts = parse_time(to)
    sent = advance(_settings(ctx), ts)
    typer.echo(f"tick to {ts} sent to {len(sent)} partitions")


@streams_app.command("stats")
def streams_stats(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counters of the running workers: events, dead letters, join rate, lateness, lag, window
    files written."""
    from streams.control import combine_stats, read_stats

    workers = read_stats(_settings(ctx).home)
    if not workers:
        typer.echo("no worker has written stats yet", err=True)
        raise typer.Exit(1)
    total = combine_stats(workers)
    if as_json:
        typer.echo(json.dumps(total, indent=2, sort_keys=True))
        return
    rate = total["join_rate"]
    typer.echo(f"workers          {', '.join(str(w) for w in total['workers'])}")
    typer.echo(f"events in        {total['events_in']}")
    typer.echo(f"dead letters     {total['dead_letters']}")
    shown = "-" if rate is None else f"{rate:.4f}"
    typer.echo(f"join rate        {shown} ({total['joined_clicks']}/{total['clicks']} clicks)")
    typer.echo(f"late             {total['late']}")
    typer.echo(f"orphans          {total['orphans']}")
    typer.echo(f"samples/version  {total['samples_by_version']}")
    typer.echo(f"pending samples  {total['pending_samples']}")
    typer.echo(f"held events      {total['held_events']} (waiting for a slower topic)")
    landing = total["landing"]
    typer.echo(
        f"window files     {landing['files_written']} written ({landing['rows_written']} rows; "
        f"{landing['samples_read_back']} samples read back from the samples topic)"
    )
    for partition, facts in sorted(total["partitions"].items(), key=lambda kv: int(kv[0])):
        mark, lag = facts["watermark"], facts["lag_seconds"]
        typer.echo(f"partition {partition:>3s}    watermark {mark}  lag {lag}")


@profiles_app.command("load")
def profiles_load(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Folder with users.parquet and anchors.parquet.")],
) -> None:
    """Load offline user and anchor profiles (Parquet) into HBase, in batches."""
    from features.hbase import HBaseTables
    from features.profiles import HBaseProfileStore, load_profiles

    hbase = _settings(ctx).hbase
    tables = HBaseTables(hbase.thrift_host, hbase.thrift_port, hbase.table_prefix, hbase.timeout_ms)
    try:
        counts = load_profiles(
            HBaseProfileStore(tables), path, progress=lambda m: typer.echo(m, err=True)
        )
    finally:
        tables.close()
    typer.echo(f"loaded {counts['user']:,d} user and {counts['anchor']:,d} anchor profiles")


@app.command()
def simulate(
    ctx: typer.Context,
    days: Annotated[float, typer.Option(help="Event-time days to simulate.")] = 1.0,
    users: Annotated[int, typer.Option(help="Users on day 0 (more sign up every day).")] = 2000,
    anchors: Annotated[int, typer.Option(help="Anchors on day 0 (more join every day).")] = 500,
    seed: Annotated[int, typer.Option(help="Same seed, same events, byte for byte.")] = 7,
    start: Annotated[
        str, typer.Option(help="First simulated day (UTC, YYYY-MM-DD).")
    ] = "2026-11-01",
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Write JSON-lines files here instead of publishing to Kafka."),
    ] = None,
    speed: Annotated[
        float,
        typer.Option(help="Kafka only: event seconds per wall second (600 = 10 min/s; 0 = max)."),
    ] = 0.0,
    truth: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Kafka only: write the ground truth (true probabilities) here."),
    ] = None,
    stats: Annotated[bool, typer.Option("--stats", help="Print the traffic's statistics.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Generate (and --stats) without writing anything.")
    ] = False,
    samples: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Land labelled samples here (the workers' pipeline in this process, no Kafka)."
        ),
    ] = None,
    drift: Annotated[
        float,
        typer.Option(
            help="How fast tastes move within a day: scales anchor popularity's hourly steps "
            "and the trending bursts (1 = default scenario, 0 = static)."
        ),
    ] = 1.0,
) -> None:
    """Simulate a live-streaming platform and publish its events (or write them to files).

    With --samples, the events go through the stream workers' own pipeline in this process
    and land as sample windows (Parquet, _SUCCESS markers): a training set in seconds.
    """
    from liverank.simulator.run import run_simulation

    report = run_simulation(
        _settings(ctx),
        days=days,
        users=users,
        anchors=anchors,
        seed=seed,
        start=start,
        out=out,
        speed=speed,
        truth=truth,
        dry_run=dry_run,
        samples=samples,
        drift=drift,
    )
    if stats:
        typer.echo(report.format())


@app.command()
def demo(
    ctx: typer.Context,
    days: Annotated[
        float, typer.Option(help="Event-time days to simulate (≥ 2: a day of warm-up).")
    ] = 3.0,
    users: Annotated[int, typer.Option(help="Users on day 0 (more sign up every day).")] = 2000,
    anchors: Annotated[int, typer.Option(help="Anchors on day 0.")] = 500,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 7,
    speed: Annotated[
        float, typer.Option(help="Event seconds per wall second while publishing.")
    ] = 600.0,
    score_fraction: Annotated[
        float, typer.Option(help="Share of the simulated requests the scorer serves.")
    ] = 0.5,
    report: Annotated[Path, typer.Option(help="Folder for the report.")] = Path("report"),
    keep_services: Annotated[
        bool, typer.Option("--keep-services", help="Leave Kafka, Redis and HBase running.")
    ] = False,
    admission: Annotated[
        bool, typer.Option(help="Compare the admission rules (two more replays).")
    ] = True,
    smoke: Annotated[
        bool,
        typer.Option("--smoke", help="A small quick run (1.5 days, 150 users): checks the wiring."),
    ] = False,
) -> None:
    """Run the whole system on simulated live traffic and write the report (report/).

    Starts the local services, two stream workers, the scorer and the trainer; publishes the
    simulated days; runs the daily offline job, the warm restart and the 15-minute
    incremental updates; then compares daily, 2-hour and 15-minute updates on the landed
    samples. Stops every process it started (the services too, unless --keep-services).
    """
    from liverank.demo.run import DemoOptions, run_demo

    options = DemoOptions(
        days=days,
        users=users,
        anchors=anchors,
        seed=seed,
        speed=speed,
        score_fraction=score_fraction,
        report=report,
        keep_services=keep_services,
        admission=admission,
    )
    if smoke:
        options = replace(options, days=1.5, users=150, anchors=50, speed=1500.0)
    if options.days < 1:
        raise typer.BadParameter("the demo needs at least one whole day (--days ≥ 1)")
    markdown = run_demo(_settings(ctx), options)
    typer.echo(markdown.read_text())
    typer.echo(f"report: {markdown}")


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Consumer lag and watermark per partition, join rate, the model in LATEST and the one
    the scorer serves (with their age), and the trainer's last gate decision."""
    import json

    from liverank.status import collect, render

    facts = collect(_settings(ctx))
    typer.echo(json.dumps(facts, indent=2, default=str) if as_json else render(facts))


@app.command()
def serve(ctx: typer.Context) -> None:
    """Run the scorer: follow LATEST, rank candidates at POST /v1/rank (see DESIGN §8)."""
    from scorer.run import serve as run_scorer

    run_scorer(_settings(ctx))


def main() -> None:
    try:
        app()
    except LiverankError as exc:
        print(f"liverank: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
