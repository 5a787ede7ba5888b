"""Errors a user can act on: the CLI prints their message on one line and exits non-zero.

Anything else that escapes a command is a bug; the CLI says so in one line too, and prints the
traceback only with ``--debug`` (or ``ALBIREO_DEBUG=1``).
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the input, the configuration or the environment, explained in the message."""

    #: the process exit code the CLI uses for it.
    exit_code = 2


class Unreachable(UserError):
    """A server the command needs does not answer (the message names it and how to start it)."""

    exit_code = 3
