"""``hpcbatch node``: compute nodes of a pool, and the files under their root directories."""

from __future__ import annotations

from collections.abc import Sequence

import click

from hpcbatch.client.cli.common import (
    FILE_COLUMNS,
    NODE_COLUMNS,
    NODE_DEALLOCATION_OPTIONS,
    Decorator,
    action_command,
    download_command,
    list_command,
    node_id_option,
    pool_id_option,
    read_command,
)
from hpcbatch.client.cli.nodeops_commands import add_node_commands  # "node user", "node file delete"


@click.group()
def node() -> None:
    """Inspect and manage compute nodes."""


list_command(node, "list", "List a pool's compute nodes.",
             lambda c, pool_id, filter_, select: c.list_nodes_json(pool_id, filter_, select),
             pool_id_option, columns=NODE_COLUMNS, example="state eq 'idle'")

read_command(node, "show", "Show a compute node.",
             lambda c, pool_id, node_id: c.get_node_json(pool_id, node_id),
             pool_id_option, node_id_option)


def node_option(choices: Sequence[str], what: str) -> Decorator:
    """``--option``: what happens to the node's running tasks (default requeue)."""
    return click.option("--option", "option", type=click.Choice(list(choices)),
                        help=f"What happens to the node's running tasks when it {what} "
                             "(default requeue).")


for _name, _method, _doc, _done, _choices, _when in (
        ("reboot", "reboot_node",
         'Reboot a compute node ("Compute Node - Reboot"); its start task runs again.',
         "rebooting", NODE_DEALLOCATION_OPTIONS, "reboots"),
        ("reimage", "reimage_node",
         ('Reimage a compute node ("Compute Node - Reimage"): its root dir is wiped, then it '
          "reboots."), "reimaging", NODE_DEALLOCATION_OPTIONS, "is reimaged"),
        ("disable-scheduling", "disable_node_scheduling",
         'Stop new tasks from starting on a node ("Compute Node - Disable Scheduling").',
         "disabled scheduling on", NODE_DEALLOCATION_OPTIONS[:3], "stops taking tasks")):
    action_command(node, _name, _doc,
                   lambda c, pool_id, node_id, option, method=_method: getattr(c, method)(
                       pool_id, node_id, option),
                   f"{_done} node {{node_id}} of pool {{pool_id}}",
                   pool_id_option, node_id_option, node_option(_choices, _when))

action_command(
    node, "enable-scheduling", 'Let a node take tasks again ("Compute Node - Enable Scheduling").',
    lambda c, pool_id, node_id: c.enable_node_scheduling(pool_id, node_id),
    "enabled scheduling on node {node_id} of pool {pool_id}",
    pool_id_option, node_id_option)

action_command(
    node, "remove",
    'Remove nodes from a pool ("Pool - Remove Nodes"); the pool\'s target drops with them.',
    lambda c, pool_id, node_ids, option: c.remove_nodes(pool_id, list(node_ids), option),
    lambda pool_id, node_ids, option: (f"removing {len(node_ids)} node(s) from pool {pool_id}: "
                                       f"{', '.join(node_ids)}"),
    pool_id_option,
    click.option("--node-id", "node_ids", multiple=True, required=True,
                 help="The compute node ID (repeatable)."),
    node_option(NODE_DEALLOCATION_OPTIONS, "leaves the pool"))


@node.group("file")
def node_file() -> None:
    """List and download the files under a compute node's root directory."""


list_command(
    node_file, "list",
    'List the files under a node\'s root directory ("File - List From Compute Node").',
    lambda c, pool_id, node_id, recursive, filter_: c.list_node_files_json(
        pool_id, node_id, recursive, filter_),
    pool_id_option, node_id_option,
    click.option("--recursive", is_flag=True, help="Include files of subdirectories."),
    columns=FILE_COLUMNS, example="startswith(name, 'workitems')", server=("filter",))


download_command(
    node_file, 'Download a file of a node ("File - Get From Compute Node"), e.g. a subtask\'s '
               "output.",
    lambda c, pool_id, node_id, file_path: c.download_node_file(pool_id, node_id, file_path),
    pool_id_option, node_id_option,
    click.option("--file-path", required=True,
                 help="Path under the node's root, e.g. workitems/{job}/job-1/{task}/stdout.txt."))


add_node_commands(node, node_file)
