"""``albireo config show``: the effective configuration."""

from __future__ import annotations

import click

from broker.cli.common import config_option, load


@click.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@config_option
def config_show(config_path: str | None) -> None:
    """Print the effective configuration (defaults ← file ← ALBIREO_* environment) as TOML."""
    from broker.config import to_toml

    click.echo(to_toml(load(config_path)))
