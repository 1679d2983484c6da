"""``hpcbatch hosts``: the host inventory (the machines pools take their nodes from)."""

from __future__ import annotations

import click

from hpcbatch.client.cli.common import (
    Column,
    action_command,
    client,
    emit,
    output_option,
    read_command,
)

HOST_COLUMNS: list[Column] = [
    ("Name", "name"), ("Address", "address"), ("Port", "port"), ("User", "user"),
    ("Cores", "cores"), ("Labels", "labels"), ("Provider", "provider"), ("Pool", "poolId"),
]


@click.group()
def hosts() -> None:
    """Manage the host inventory (the machines pools take their nodes from)."""


@hosts.command("add")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="Inventory YAML file (see hpcbatch.providers.inventory).")
@output_option
def hosts_add(file: str) -> None:
    """Add (or replace) the hosts of an inventory file.

    Hosts with provider local, local key or config paths, or host-key checking off are
    the operator's: run on the service machine (the state dir's operator key signs the
    request), or against a service started with --allow-api-local-hosts.
    """
    from hpcbatch.providers.inventory import load_inventory

    emit(client().add_hosts([h.model_dump(mode="json") for h in load_inventory(file)]),
         HOST_COLUMNS)


read_command(hosts, "list", "List the inventory, with the pool each host belongs to.",
             lambda c: c.list_hosts(), columns=HOST_COLUMNS)

action_command(hosts, "remove", "Remove a host that belongs to no pool.",
               lambda c, name: c.remove_host(name), "removed host {name}",
               click.option("--name", required=True, help="Inventory name of the host."))
