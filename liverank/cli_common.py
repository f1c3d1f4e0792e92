"""What every ``liverank`` sub-command shares."""

from __future__ import annotations

import typer

from liverank.settings import Settings


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the root command built (once) from the environment and the TOML file."""
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings
