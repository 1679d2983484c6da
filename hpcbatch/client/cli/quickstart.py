"""``hpcbatch quickstart``: a local service, a pool, a job and tasks, end to end
(:mod:`hpcbatch.client.quickstart`)."""

from __future__ import annotations

import click

from hpcbatch.client.cli.common import optional_module


@click.command()
@click.option("--nodes", type=click.IntRange(min=1), default=3, show_default=True,
              help="Local compute nodes to start.")
def quickstart(nodes: int) -> None:
    """Run the quickstart: a local service, a pool, a job and tasks, end to end."""
    code = optional_module("hpcbatch.client.quickstart").main(nodes=nodes)
    click.get_current_context().exit(int(code or 0))
