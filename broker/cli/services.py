"""``albireo services``: fetch, start, stop and inspect the local Kafka, Cassandra and Elasticsearch."""

from __future__ import annotations

import click

_NAMES = ("kafka", "cassandra", "elasticsearch")
_SERVICE_NAMES = click.Choice(_NAMES)


@click.group("services")
def services_group() -> None:
    """Start, stop and inspect the local Kafka, Cassandra and Elasticsearch servers."""


@services_group.command("up")
@click.argument("names", nargs=-1, type=_SERVICE_NAMES)
def services_up(names: tuple[str, ...]) -> None:
    """Fetch (Maven Central) and start the named servers on 127.0.0.1 (default: all)."""
    from broker.ops import services as svc

    try:
        svc.up(list(names) or list(_NAMES))
    except svc.ServiceError as exc:
        raise click.ClickException(str(exc)) from exc


@services_group.command("down")
@click.argument("names", nargs=-1, type=_SERVICE_NAMES)
def services_down(names: tuple[str, ...]) -> None:
    """Stop the named servers (default: all)."""
    from broker.ops import services as svc

    svc.down(list(names) or list(_NAMES))


@services_group.command("status")
@click.argument("names", nargs=-1, type=_SERVICE_NAMES)
def services_status(names: tuple[str, ...]) -> None:
    """Show each server's state (installed, running, healthy)."""
    from broker.ops import services as svc

    for name, state in svc.status(list(names) or list(_NAMES)).items():
        click.echo(f"{name:14s} " + "  ".join(f"{k}={v}" for k, v in state.items()))
