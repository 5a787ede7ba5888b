"""What every ``albireo`` command shares: loading the configuration, logging, one-line errors."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import click

from broker.config import Config, ConfigError, load_config
from broker.errors import UserError

#: ``--config`` on every command that reads the configuration.
config_option = click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
                             help="TOML configuration file (default: $ALBIREO_CONFIG, else built-in defaults).")


def load(config_path: str | None) -> Config:
    """The effective configuration, or a one-line error naming the bad setting."""
    try:
        return load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def setup_logging(level: str, fmt: str | None = None) -> None:
    """Text or JSON lines on stderr (``[service] log_format``); see :mod:`broker.logs`."""
    from broker import logs

    logs.setup(level, fmt or "text")


def progress_enabled() -> bool:
    """Progress bars only on a terminal (CI logs and pipes stay clean)."""
    return sys.stderr.isatty()


def progress_bar(total: int | None, unit: str, desc: str) -> Any:
    """A tqdm bar on stderr, shown only on a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, disable=not progress_enabled(), leave=False)


class AlbireoGroup(click.Group):
    """The ``albireo`` group: every failure ends as one line on stderr and a non-zero exit code.

    * :class:`~broker.errors.UserError` (bad input, missing store, unreachable server): its
      message, exit code 2 or 3;
    * anything else is a bug: its type and message, exit code 1, and the traceback only with
      ``--debug`` or ``ALBIREO_DEBUG=1``.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # the order they were added in: the order a new user meets them

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("albireo: interrupted", err=True)
            sys.exit(130)
        except UserError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:  # the last line of defence: a bug must still end in one clear line
            if _debug(ctx):
                traceback.print_exc()
            first = str(exc).splitlines()[0] if str(exc) else ""
            click.echo(f"Error: internal error: {type(exc).__name__}: {first} "
                       "(run with --debug for the traceback)", err=True)
            sys.exit(1)


def _debug(ctx: click.Context) -> bool:
    return bool((ctx.obj or {}).get("debug")) or os.environ.get("ALBIREO_DEBUG", "") not in ("", "0")
