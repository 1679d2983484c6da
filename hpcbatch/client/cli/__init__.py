"""The ``hpcbatch`` command line, shaped like ``az batch``.

Every command that talks to the service goes through :class:`hpcbatch.BatchClient`
(found by :meth:`BatchClient.from_environment`: ``AZURE_BATCH_ENDPOINT``/
``AZURE_BATCH_ACCOUNT``/``AZURE_BATCH_ACCESS_KEY``, else the running service of the
state dir). Lists and shows print a table for people, or the Batch wire JSON
with ``--output json``. Service errors print ``error: {code}: {message}`` and exit 1.

One module per command group (:mod:`.pool`, :mod:`.job`, :mod:`.task` ...), imported
when its group is used; what they share is :mod:`.common`. Importing the command
line imports ``click`` and :mod:`.common` only: the SDK, ``rich`` and anything
heavier are imported by the command that uses them, and only ``service start``,
``testbed`` and ``quickstart`` import the service or the testbed.

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

import importlib
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import click

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.client.cli.common import State
from hpcbatch.version import __version__

__all__ = ["cli", "main"]

COMMAND_GROUPS: Mapping[str, str] = {
    "application": "application:application",
    "dashboard": "dashboard:dashboard",
    "bench": "bench:bench",
    "certificate": "certificate:certificate",
    "events": "events:events",
    "hosts": "hosts:hosts",
    "init": "init:init",
    "job": "job:job",
    "job-schedule": "job_schedule:job_schedule",
    "mpi": "mpi:mpi",
    "node": "node:node",
    "output": "output:output_group",
    "pool": "pool:pool",
    "quickstart": "quickstart:quickstart",
    "service": "service:service",
    "task": "task:task",
    "testbed": "testbed:testbed",
}
"""Each command of the root group: ``module:attribute`` under this package."""


class BatchGroup(click.Group):
    """The root group: loads a command group's module when it is used, and turns
    hpcbatch errors into ``error: {code}: {message}``.

    ``hpcbatch task list`` imports :mod:`.task` and none of the other groups'
    modules (nor what they import). :attr:`commands` holds every command: reading
    it loads them all (as ``hpcbatch --help`` does).

    Parameters
    ----------
    lazy_commands
        ``{name: "module:attribute"}``, the module relative to this package.
    """

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        self._lazy = dict(lazy_commands or {})
        super().__init__(*args, **kwargs)

    @property
    def commands(self) -> MutableMapping[str, click.Command]:
        """Every command, its module imported."""
        for name in list(self._lazy):
            self._load(name)
        return self._commands

    @commands.setter
    def commands(self, value: MutableMapping[str, click.Command]) -> None:
        self._commands = value

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self._commands, *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            self._load(cmd_name)
        return self._commands.get(cmd_name)

    def _load(self, name: str) -> None:
        module, _, attribute = self._lazy.pop(name).partition(":")
        self._commands[name] = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)

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
        except OSError as exc:  # a local file: "cannot write out/g.txt: No such file ..."
            if exc.filename is not None and exc.strerror:
                click.echo(f"error: cannot use {exc.filename}: {exc.strerror}", err=True)
            else:
                click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=BatchGroup, lazy_commands=COMMAND_GROUPS,
             context_settings={"help_option_names": ["-h", "--help"]})
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


def main() -> None:
    """Run the ``hpcbatch`` command line."""
    cli.main(prog_name="hpcbatch")
