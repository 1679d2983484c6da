"""``hpcbatch hosts``: the host inventory (the machines pools take their nodes from)."""

from __future__ import annotations

import sys

import click

from hpcbatch.client.cli.common import (
    Column,
    action_command,
    as_json,
    client,
    emit,
    list_command,
    note,
    output_option,
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


list_command(hosts, "list", "List the inventory, with the pool each host belongs to.",
             lambda c: c.list_hosts(), columns=HOST_COLUMNS, example="pool eq null", server=())

action_command(hosts, "remove", "Remove a host that belongs to no pool.",
               lambda c, name: c.remove_host(name), "removed host {name}",
               click.option("--name", required=True, help="Inventory name of the host."))


CHECK_COLUMNS: list[Column] = [
    ("Host", "host"), ("Check", "check"), ("Status", "status"), ("Detail", "detail"),
    ("Fix", "fix"),
]


@hosts.command("check")
@click.option("--pool-id", default=None,
              help="Check only this pool's hosts: also a container runtime on the task PATH "
                   "(pools with containerConfiguration) and ssh between each pair of its "
                   "nodes (pools with inter-node communication).")
@click.option("--launcher", default=None, metavar="NAME",
              help="MPI launcher to look for on the task PATH.  [default: mpiexec]")
@output_option
def hosts_check(pool_id: str | None, launcher: str | None) -> None:
    """Preflight the inventory's hosts before a pool uses them; exit 1 when any fails.

    For every host, in parallel: SSH reachability and host key, the host's
    python and its hpcbatch/distributed versions against the service's, free
    disk under root_dir, the MPI launcher on the task PATH (the python's bin
    directory first, then the inventory env), and the time the login shell
    takes to start a command (a warning above 0.1 s: every node start and MPI
    launch over SSH pays it); with --pool-id, a container runtime there when
    the pool has a containerConfiguration, and ssh between each pair of the
    pool's nodes when it has inter-node communication. One line per host and
    check; a failure names the host, the cause and the fix, a warning its cost.
    """
    result = client().check_hosts(pool_id, launcher)
    checks = result["value"]
    if as_json():
        emit(result)
    elif sys.stdout.isatty():
        emit(checks, CHECK_COLUMNS)
    else:
        for c in checks:
            line = f"{c['host']}\t{c['check']}\t{c['status']}\t{c['detail']}"
            click.echo(line + (f"\tfix: {c['fix']}" if c["fix"] else ""))
    failed = result.get("failed") or []
    warned = list(dict.fromkeys(c["host"] for c in checks if c["status"] == "warn"))
    warnings = f"; {len(warned)} with warnings: {', '.join(warned)}" if warned else ""
    if failed:
        note(f"{len(failed)} host(s) failed: {', '.join(failed)}{warnings}")
        click.get_current_context().exit(1)
    note(f"all {len({c['host'] for c in checks})} host(s) passed{warnings} "
         f"(service: hpcbatch {result['service']['hpcbatch']}, "
         f"distributed {result['service']['distributed']})")
