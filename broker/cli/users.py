"""``albireo users ...``: users, their Kafka credentials, stream grants and API keys.

Each command calls one method of :class:`broker.access.service.Users` (the portal's grant API
calls the same ones), which changes the broker (SCRAM and PLAIN credentials, ACLs) and then the
records (``[users] db``). Secrets are printed once, when made, and never again: ``list`` shows key
ids and labels only.

Bootstrapping: whoever can run this command on the host holding ``users.db`` is the operator.
``albireo users add NAME --role admin`` prints the first admin's API key; every later user, grant
and key can then also be made over the API with that key.
"""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path
from typing import Any

import click

from broker.cli.common import config_option, load

_json_opt = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _users(config_path: str | None, *, records_only: bool = False):
    """The users service; ``records_only`` for what never touches the broker (list, API keys)."""
    from broker.assemble import open_users

    return open_users(load(config_path), records_only=records_only)


def _when(ts: float | None) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str, sort_keys=True))


def _connection(users) -> dict[str, Any]:
    return {"bootstrap_servers": users.consumer_bootstrap, "security_protocol": "SASL_SSL",
            "sasl_mechanisms": ["SCRAM-SHA-512", "PLAIN"], "ca_file": users.ca_file}


@click.group(name="users")
def users_group() -> None:
    """Users: Kafka credentials, stream grants (ACLs) and portal/API keys."""


@users_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["user", "admin", "pipeline"]), default="user", show_default=True,
              help="admin: approvals, grants and users over the API; pipeline: writes the streams over SASL_SSL.")
@click.option("--group", "groups", multiple=True,
              help="An extra consumer group this user may use (repeatable); NAME and NAME.* are always allowed.")
@click.option("--no-key", is_flag=True, help="Make no API key (a consumer that only reads Kafka).")
@config_option
@_json_opt
def users_add(name: str, role: str, groups: tuple[str, ...], no_key: bool, config_path: str | None,
              as_json: bool) -> None:
    """Create user NAME with a Kafka password (SCRAM-SHA-512 and PLAIN) and an API key, shown once."""
    users = _users(config_path)
    new = users.add(name, role, groups, with_key=not no_key)
    result = {"name": new.name, "role": new.role, "kafka_username": new.name, "kafka_password": new.password,
              "key_id": new.key_id, "api_key": new.api_key, **_connection(users)}
    if as_json:
        _echo_json(result)
        return
    click.echo(f"user {new.name} (role {new.role}) created; the secrets below are shown only now")
    if users.cfg.users.stream_access == "none":
        click.echo("  (users.stream_access = none: the Kafka credential and grants are recorded, not enforced)")
    click.echo(f"  Kafka username:  {new.name}")
    click.echo(f"  Kafka password:  {new.password}")
    click.echo(f"  Kafka bootstrap: {users.consumer_bootstrap} (SASL_SSL; SCRAM-SHA-512, or PLAIN for antares-client)")
    click.echo(f"  CA certificate:  {users.ca_file}")
    if new.api_key:
        click.echo(f"  API key:         {new.api_key}  (id {new.key_id}; Authorization: Bearer <key>)")
    if new.role == "pipeline":
        click.echo("a worker uses it with (albireo.toml):")
        click.echo(f'  [kafka]\n  bootstrap_servers = "{users.consumer_bootstrap}"\n  [kafka.extra]\n'
                   f'  "security.protocol" = "SASL_SSL"\n  "sasl.mechanisms" = "SCRAM-SHA-512"\n'
                   f'  "sasl.username" = "{new.name}"\n  "sasl.password" = "{new.password}"\n'
                   f'  "ssl.ca.location" = "{users.ca_file}"')
    else:
        click.echo(f"grant streams with: albireo users grant {new.name} STREAM...")


@users_group.command("grant")
@click.argument("name")
@click.argument("streams", nargs=-1, required=True)
@config_option
def users_grant(name: str, streams: tuple[str, ...], config_path: str | None) -> None:
    """Allow NAME to read STREAMS (every topic each stream is published on)."""
    users = _users(config_path)
    new = users.grant(name, list(streams), by="cli")
    click.echo(f"{name} may read {', '.join(streams)}" + ("" if new else " (already granted)"))


@users_group.command("revoke")
@click.argument("name")
@click.argument("streams", nargs=-1, required=True)
@config_option
def users_revoke(name: str, streams: tuple[str, ...], config_path: str | None) -> None:
    """Stop NAME reading STREAMS: the broker refuses the next fetch."""
    users = _users(config_path)
    gone = users.revoke(name, list(streams))
    click.echo(f"{name} may no longer read {', '.join(streams)}" + ("" if gone else " (was not granted)"))


@users_group.command("list")
@config_option
@_json_opt
def users_list(config_path: str | None, as_json: bool) -> None:
    """Users, roles, grants and API keys (ids and labels; never a secret)."""
    users = _users(config_path, records_only=True)
    rows = users.list()
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo(f"no users in {users.records.path} (albireo users add NAME --role admin)")
        return
    for u in rows:
        groups = f"  groups: {', '.join(u['groups'])}" if u["groups"] else ""
        click.echo(f"{u['name']:20s} {u['role']:9s} grants: {', '.join(u['grants']) or '-'}{groups}")
        for k in u["keys"]:
            state = "active" if k["active"] else f"revoked {_when(k['revoked_at'])}"
            click.echo(f"    key {k['key_id']}  {k['label'] or '-':20s} made {_when(k['created_at'])}  {state}")


@users_group.command("password")
@click.argument("name")
@config_option
@_json_opt
def users_password(name: str, config_path: str | None, as_json: bool) -> None:
    """A new Kafka password for NAME (both mechanisms; the old one stops working), shown once."""
    users = _users(config_path)
    password = users.set_password(name)
    if as_json:
        _echo_json({"name": name, "kafka_password": password, **_connection(users)})
    else:
        click.echo(f"new Kafka password for {name}: {password}")


@users_group.command("key")
@click.argument("name")
@click.option("--label", default="", help="What the key is for (shown by list).")
@config_option
@_json_opt
def users_key(name: str, label: str, config_path: str | None, as_json: bool) -> None:
    """A new API key for NAME (portal login, Authorization: Bearer), shown once."""
    key_id, key = _users(config_path, records_only=True).new_key(name, label)
    if as_json:
        _echo_json({"name": name, "key_id": key_id, "api_key": key})
    else:
        click.echo(f"API key for {name} (id {key_id}): {key}")


@users_group.command("revoke-key")
@click.argument("key_id")
@config_option
def users_revoke_key(key_id: str, config_path: str | None) -> None:
    """Revoke one API key (its sessions end at their next request)."""
    _users(config_path, records_only=True).revoke_key(key_id)
    click.echo(f"API key {key_id} revoked")


@users_group.command("remove")
@click.argument("name")
@config_option
def users_remove(name: str, config_path: str | None) -> None:
    """Delete NAME: Kafka credentials, every ACL, API keys and grants."""
    _users(config_path).remove(name)
    click.echo(f"user {name} removed")


@users_group.command("check")
@click.option("--repair", is_flag=True, help="Make the broker's ACLs what the records say.")
@config_option
def users_check(repair: bool, config_path: str | None) -> None:
    """Compare the broker's ACLs with the records; exit 1 when they differ (and --repair was not given)."""
    users = _users(config_path)
    drift = users.check()
    for name, d in drift.items():
        for r in d["missing"]:
            click.echo(f"{name}: missing on the broker: {r.operation} {r.resource} {r.name} ({r.pattern})")
        for r in d["extra"]:
            click.echo(f"{name}: extra on the broker:   {r.operation} {r.resource} {r.name} ({r.pattern})")
        if repair:
            users.repair(name)
            click.echo(f"{name}: repaired")
    if not drift:
        click.echo("the broker's ACLs match the records")
    elif not repair:
        raise SystemExit(1)


@users_group.command("ca")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Copy the CA certificate here.")
@config_option
def users_ca(out: Path | None, config_path: str | None) -> None:
    """Print the CA certificate consumers verify the broker with (or copy it to --out)."""
    from broker.errors import UserError

    cfg = load(config_path)
    ca = cfg.users.ca_file
    if not ca:
        from broker.ops import services

        ca = str(services.kafka_ca_file())
    if not Path(ca).exists():
        raise UserError(f"no CA certificate at {ca}: `albireo services up kafka` makes the local one")
    if out:
        shutil.copyfile(ca, out)
        click.echo(f"copied {ca} to {out}")
    else:
        click.echo(Path(ca).read_text(), nl=False)
