"""``hpcbatch testbed``: an SSH testbed, real sshd daemons on loopback addresses."""

from __future__ import annotations

from pathlib import Path

import click

from hpcbatch.client.cli.common import (
    as_json,
    emit,
    note,
    optional_module,
    output_option,
)

TESTBED = "hpcbatch.testing.testbed"


@click.group()
def testbed() -> None:
    """Run an SSH testbed: real sshd daemons on loopback addresses."""


@testbed.command("up")
@click.option("--nodes", type=click.IntRange(min=1), required=True, help="Number of sshd nodes.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Folder for keys, configs, logs and node root dirs.")
@click.option("--base-address", default="127.0.1.1", show_default=True,
              help="Address of the first node; the others increment its last octet.")
@output_option
def testbed_up(nodes: int, directory: Path, base_address: str) -> None:
    """Start a testbed and print its inventory and ssh_config paths."""
    tb = optional_module(TESTBED).up(nodes, directory, base_address=base_address)
    emit({"inventory": str(tb.inventory_path), "ssh_config": str(tb.ssh_config_path),
          "hosts": [h.name for h in tb.hosts]})
    if not as_json():
        note(f"add the nodes to a service with: hpcbatch hosts add --file {tb.inventory_path}")


@testbed.command("down")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="The testbed folder.")
def testbed_down(directory: Path) -> None:
    """Stop the testbed's sshd daemons."""
    optional_module(TESTBED).down(directory)
    note(f"stopped the testbed in {directory}")
