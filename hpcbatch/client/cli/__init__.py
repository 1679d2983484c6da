"""The ``hpcbatch`` command line, shaped like ``az batch``.

Every command that talks to the service goes through :class:`hpcbatch.BatchClient`
(found by :meth:`BatchClient.from_environment`: ``AZURE_BATCH_ENDPOINT``/
``AZURE_BATCH_ACCOUNT``/``AZURE_BATCH_ACCESS_KEY``, else the running service of the
state dir). Lists and shows print a table for people, or the Batch wire JSON
with ``--output json``. Service errors print ``error: {code}: {message}`` and exit 1.

One module per command group (:mod:`.pool`, :mod:`.job`, :mod:`.task` ...); what
they share is :mod:`.common`. Importing the command line imports ``click`` and
these modules only: the SDK, ``rich`` and anything heavier are imported by the
command that uses them, and only ``service start``, ``testbed`` and
``quickstart`` import the service or the testbed.

Examples
--------
::

    hpcbatch service start --detach
    hpcbatch hosts add --file hosts.yaml
    hpcbatch pool create --id p --vm-size any --target-dedicated-nodes 2
    hpcbatch pool wait --pool-id p
    hpcbatch job create --id j --pool-id p
    hpcbatch task create --job-id j --json-file tasks.json
    hpcbatch task wait --job-id j
    hpcbatch task file download --job-id j --task-id t1 --file-path stdout.txt --destination -
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hpcbatch import __version__
from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.client.cli import (
    application,
    events,
    hosts,
    init,
    job,
    job_schedule,
    mpi,
    node,
    output,
    pool,
    quickstart,
    service,
    task,
    testbed,
)
from hpcbatch.client.cli.common import State

__all__ = ["cli", "main"]


class BatchGroup(click.Group):
    """The root group: turns hpcbatch errors into ``error: {code}: {message}``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HpcbatchError as exc:
            extra = [f"{k}: {v}" for k, v in exc.values.items() if str(v) not in exc.message]
            click.echo(f"error: {exc.code}: {exc.message}"
                       + (f" ({'; '.join(extra)})" if extra else ""), err=True)
            ctx.exit(1)
        except TimeoutError as exc:
            click.echo(f"error: Timeout: {exc}", err=True)
            ctx.exit(2)
        except OSError as exc:
            click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=BatchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Service state dir (default: $HPCBATCH_STATE_DIR, else ~/.hpcbatch). Without "
                   "it, AZURE_BATCH_ENDPOINT/ACCOUNT/ACCESS_KEY name the service when set.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format of every command.")
@click.version_option(__version__, prog_name="hpcbatch")
@click.pass_context
def cli(ctx: click.Context, state_dir: Path | None, output: str) -> None:
    """Azure Batch's programming model on your own SSH hosts, run by Dask."""
    obj = ctx.ensure_object(State)
    obj.state_dir, obj.output = state_dir, output


for _group in (service.service, hosts.hosts, application.application, pool.pool, node.node,
               job.job, task.task, output.output_group, mpi.mpi, quickstart.quickstart,
               testbed.testbed, init.init, job_schedule.job_schedule, events.events):
    cli.add_command(_group)


def main() -> None:
    """Run the ``hpcbatch`` command line."""
    cli.main(prog_name="hpcbatch")
