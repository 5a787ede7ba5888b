"""The ``albireo`` command: one module per command group, all named here (the one extension point).

``albireo demo`` runs the whole pipeline with no server (SQLite + files) on real sample alerts;
``albireo run`` is the production worker (Kafka in and out, any store); ``albireo serve`` the
portal and API; ``albireo services`` starts the local Kafka, Cassandra and Elasticsearch;
``albireo replay`` produces real packets (and notices) to Kafka; ``albireo status`` shows what is running;
``albireo notices`` ingests neutrino and gravitational-wave notices; ``albireo scan-server`` and
``albireo scan-worker`` run reconstruction scans (SkyDriver's pattern); ``albireo release`` publishes the FAIR
event catalog's versions; ``albireo users`` manages who may read
which stream and write through the API.
"""

from __future__ import annotations

import click

import broker
from broker.cli.bench import bench_group
from broker.cli.catalog import catalog
from broker.cli.common import AlbireoGroup
from broker.cli.config_cmd import config_group
from broker.cli.demo import demo
from broker.cli.filter import filter_group
from broker.cli.notices import notices_group
from broker.cli.release import release_group
from broker.cli.replay import replay
from broker.cli.run import run
from broker.cli.scan_server import scan_server
from broker.cli.scan_worker import scan_worker
from broker.cli.serve import serve
from broker.cli.services import services_group
from broker.cli.status import status
from broker.cli.users import users_group
from broker.cli.watch import watch_group

__all__ = ["main"]


@click.group(cls=AlbireoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(broker.__version__, prog_name="albireo")
@click.option("--debug", is_flag=True, help="Print tracebacks of internal errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Albireo: an astronomical alert broker (ZTF, Rubin/LSST → loci → filters → tagged streams)."""
    ctx.obj = {"debug": debug}


#: every command, in the order a new user meets them.
COMMANDS = (demo, serve, run, status, replay, filter_group, notices_group, scan_server, scan_worker, release_group,
            catalog, users_group, services_group, config_group, bench_group, watch_group)
for _cmd in COMMANDS:
    main.add_command(_cmd)
