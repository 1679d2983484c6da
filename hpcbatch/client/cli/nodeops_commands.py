"""``hpcbatch node user add/update/delete``, ``hpcbatch node login-settings``,
``hpcbatch node file delete`` and ``hpcbatch task file delete``.

:func:`add_node_commands` and :func:`add_task_file_commands` attach them to the ``node``
and ``task`` groups (:mod:`.node`, :mod:`.task`).
"""

from __future__ import annotations

from pathlib import Path

import click

from hpcbatch.client.cli.common import (
    action_command,
    job_id_option,
    node_id_option,
    pool_id_option,
    read_command,
    task_id_option,
)

_recursive = click.option("--recursive", is_flag=True,
                          help="Delete a directory and everything in it (else it must be empty).")


def _user_body(ssh_public_key: str | None, ssh_public_key_file: Path | None,
               password: str | None, expiry_time: str | None) -> dict[str, object]:
    """``password``/``sshPublicKey``/``expiryTime`` of a node user from the options."""
    if ssh_public_key and ssh_public_key_file:
        raise click.UsageError("give --ssh-public-key or --ssh-public-key-file, not both.")
    key = ssh_public_key_file.read_text().strip() if ssh_public_key_file else ssh_public_key
    return {k: v for k, v in {"sshPublicKey": key, "password": password,
                              "expiryTime": expiry_time}.items() if v is not None}


_user_options = (
    click.option("--ssh-public-key", help="The user's SSH public key (OpenSSH format)."),
    click.option("--ssh-public-key-file", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path),
                 help="A file holding the user's SSH public key (e.g. ~/.ssh/id_ed25519.pub)."),
    click.option("--password", help="The user's password."),
    click.option("--expiry-time", metavar="ISO8601",
                 help="When the account expires (default: one day from now)."),
)


def add_node_commands(node: click.Group, node_file: click.Group) -> None:
    """Add ``node user ...``, ``node login-settings`` and ``node file delete``."""
    @node.group("user")
    def node_user() -> None:
        """Manage users on a compute node (for SSH login: see ``node login-settings``)."""

    action_command(
        node_user, "add", 'Add a user to a node ("Compute Node - Add User").',
        lambda c, pool_id, node_id, name, is_admin, **o: c.add_node_user(
            pool_id, node_id, {"name": name, "isAdmin": is_admin, **_user_body(**o)}),
        "added user {name} to node {node_id} of pool {pool_id}",
        pool_id_option, node_id_option,
        click.option("--name", required=True, help="The user name."),
        click.option("--is-admin", is_flag=True, help="Make the user an administrator (sudo)."),
        *_user_options)

    action_command(
        node_user, "update",
        'Replace a node user\'s password, SSH key and expiry ("Compute Node - Update User"); '
        "one left out is removed (or, for the expiry, reset to one day from now).",
        lambda c, pool_id, node_id, name, **o: c.update_node_user(pool_id, node_id, name,
                                                                  _user_body(**o)),
        "updated user {name} on node {node_id} of pool {pool_id}",
        pool_id_option, node_id_option,
        click.option("--name", required=True, help="The user name."), *_user_options)

    action_command(
        node_user, "delete", 'Delete a user from a node ("Compute Node - Delete User").',
        lambda c, pool_id, node_id, name: c.delete_node_user(pool_id, node_id, name),
        "deleted user {name} from node {node_id} of pool {pool_id}",
        pool_id_option, node_id_option,
        click.option("--name", required=True, help="The user name."))

    read_command(
        node, "login-settings",
        'Show a node\'s SSH address and port ("Compute Node - Get Remote Login Settings"): '
        "ssh USER@ADDRESS -p PORT.",
        lambda c, pool_id, node_id: c.get_remote_login_settings(pool_id, node_id),
        pool_id_option, node_id_option)

    action_command(
        node_file, "delete",
        'Delete a file or directory under a node\'s root ("File - Delete From Compute Node").',
        lambda c, pool_id, node_id, file_path, recursive: c.delete_node_file(
            pool_id, node_id, file_path, recursive),
        "deleted {file_path} on node {node_id} of pool {pool_id}",
        pool_id_option, node_id_option,
        click.option("--file-path", required=True, help="Path under the node's root."),
        _recursive)


def add_task_file_commands(task_file: click.Group) -> None:
    """Add ``task file delete``."""
    action_command(
        task_file, "delete",
        'Delete a file or directory of a task\'s directory ("File - Delete From Task").',
        lambda c, job_id, task_id, file_path, recursive: c.delete_task_file(
            job_id, task_id, file_path, recursive),
        "deleted {file_path} of task {task_id} of job {job_id}",
        job_id_option, task_id_option,
        click.option("--file-path", required=True, help="Path in the task dir, e.g. wd/out."),
        _recursive)
