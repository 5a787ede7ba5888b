"""``albireo bench``: the benchmarks of ``bench/``, from anywhere (they run from the checkout)."""

from __future__ import annotations

import subprocess
import sys

import click

from broker import REPO_ROOT


@click.group("bench")
def bench_group() -> None:
    """Run the benchmarks (each prints ratios against a baseline measured in the same run)."""


@bench_group.command("e2e", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def e2e(ctx: click.Context) -> None:
    """The whole stack on the real servers (`make bench-e2e`); options as `python -m bench.bench_e2e -h`."""
    if not (REPO_ROOT / "bench" / "bench_e2e.py").exists():
        raise click.ClickException(f"the benchmarks live in a checkout's bench/ folder; none at {REPO_ROOT}")
    sys.exit(subprocess.call([sys.executable, "-m", "bench.bench_e2e", *ctx.args], cwd=REPO_ROOT))
