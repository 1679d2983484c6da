"""``hpcbatch init``: copy a starter project of Batch's Job Manager or Task Processor template."""

from __future__ import annotations

from pathlib import Path

import click

from hpcbatch.client.cli.common import note


@click.group("init")
def init() -> None:
    """Copy a starter project of Batch's Job Manager or Task Processor template."""


def _init_command(name: str, what: str) -> None:
    @init.command(name, help=f"Copy the {what} template (main.py, parameters.json, README.md) "
                             "into DIRECTORY (created if missing).")
    @click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--force", is_flag=True, help="Replace files that already exist.")
    def command(directory: Path, force: bool) -> None:
        from hpcbatch.templates import copy_template

        for path in copy_template(name, directory, overwrite=force):
            click.echo(str(path))
        note(f"{what} template copied to {directory}; see its README.md")


_init_command("job-manager", "Job Manager (job splitter)")
_init_command("task-processor", "Task Processor")
