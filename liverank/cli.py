"""The ``liverank`` command. Settings are read here, once, and passed down."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

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
app.add_typer(services_app, name="services")
app.add_typer(topics_app, name="topics")


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


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
) -> None:
    """Simulate a live-streaming platform and publish its events (or write them to files)."""
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
    )
    if stats:
        typer.echo(report.format())


@app.command()
def demo(
    ctx: typer.Context,
    days: Annotated[float, typer.Option(help="Event-time days to simulate.")] = 2.0,
    users: Annotated[int, typer.Option(help="Users on day 0.")] = 2000,
    anchors: Annotated[int, typer.Option(help="Anchors on day 0.")] = 500,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 7,
    report: Annotated[Path, typer.Option(help="Folder for the report.")] = Path("report"),
) -> None:
    """Run the system end to end on simulated live traffic and write the report."""
    from liverank.demo import run_demo

    markdown = run_demo(
        _settings(ctx), days=days, users=users, anchors=anchors, seed=seed, report=report
    )
    typer.echo(markdown.read_text())
    typer.echo(f"report: {markdown}")


def main() -> None:
    try:
        app()
    except LiverankError as exc:
        print(f"liverank: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
