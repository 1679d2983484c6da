"""Batch's compute node environment variables and directory layout (pure functions).

Implements "Azure Batch runtime environment variables" and the node directory
layout of "Files and directories" (reference: azure-batch-docs-2017.txt)::

    {root}/shared/                        AZ_BATCH_NODE_SHARED_DIR
    {root}/startup/                       AZ_BATCH_NODE_STARTUP_DIR (start task dir)
    {root}/startup/wd/                    start task working dir
    {root}/applications/                  application packages
    {root}/workitems/{job}/job-1/{task}/  AZ_BATCH_TASK_DIR
    {root}/workitems/{job}/job-1/{task}/wd/   AZ_BATCH_TASK_WORKING_DIR
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

NODE_DIRS = ("shared", "startup", "applications", "workitems")
"""Folders created under every node's root directory."""

SECRETS_DIR = "secrets"
"""Folder of the node root holding the node's secrets (mode 0700): never a node file."""
NODE_TLS_DIR = "secrets/tls"
"""Folder of the node root holding the node's TLS files (:data:`NODE_TLS_FILES`)."""
NODE_TLS_FILES = {"ca_file": "ca.pem", "cert_file": "cert.pem", "key_file": "key.pem"}
"""The node's TLS files in :data:`NODE_TLS_DIR`: the CA's certificate, its own certificate and key."""


def task_dir(job_id: str, task_id: str) -> str:
    """Return a task's directory relative to the node root: ``workitems/{job}/job-1/{task}``."""
    return posixpath.join("workitems", job_id, "job-1", task_id)


def start_task_dir() -> str:
    """Return the start task's directory relative to the node root: ``startup``."""
    return "startup"


@dataclass(frozen=True)
class NodeIdentity:
    """What a node knows of itself: the values behind the node-level variables.

    Attributes
    ----------
    node_id, pool_id
        Batch IDs of the compute node and its pool.
    root_dir
        Absolute node root directory on the host.
    account_name, account_url
        The hpcbatch account the node belongs to (``AZ_BATCH_ACCOUNT_*``).
    is_dedicated
        Always True here: every inventory host is a dedicated node.
    """

    node_id: str
    pool_id: str
    root_dir: str
    account_name: str
    account_url: str
    is_dedicated: bool = True


def node_environment(node: NodeIdentity) -> dict[str, str]:
    """Return the variables every task on ``node`` sees, whatever its kind."""
    root = node.root_dir
    return {
        "AZ_BATCH_ACCOUNT_NAME": node.account_name,
        "AZ_BATCH_ACCOUNT_URL": node.account_url,
        "AZ_BATCH_POOL_ID": node.pool_id,
        "AZ_BATCH_NODE_ID": node.node_id,
        "AZ_BATCH_NODE_IS_DEDICATED": "true" if node.is_dedicated else "false",
        "AZ_BATCH_NODE_ROOT_DIR": root,
        "AZ_BATCH_NODE_SHARED_DIR": posixpath.join(root, "shared"),
        "AZ_BATCH_NODE_STARTUP_DIR": posixpath.join(root, "startup"),
        "AZ_BATCH_NODE_STARTUP_WORKING_DIR": posixpath.join(root, "startup", "wd"),
        "AZ_BATCH_CERTIFICATES_DIR": posixpath.join(root, "certs"),
    }


@functools.lru_cache(maxsize=64)
def _node_environment(node: NodeIdentity) -> Mapping[str, str]:
    """:func:`node_environment`, made once per node (every run of the node asks for it)."""
    return MappingProxyType(node_environment(node))


def task_environment(
    node: NodeIdentity,
    *,
    task_dir_rel: str,
    job_id: str | None,
    task_id: str | None,
    settings: Iterable[Mapping[str, str | None]] = (),
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return the Batch variables for one task on one node.

    Parameters
    ----------
    node
        The node the task runs on.
    task_dir_rel
        The task directory relative to the node root (:func:`task_dir`).
    job_id, task_id
        The task's job and ID (None for a start task).
    settings
        ``environmentSettings`` as wire dicts (``{"name", "value"}``): the job's
        ``commonEnvironmentSettings`` first, then the task's own; later wins.
    extra
        Further service-set variables (multi-instance variables, application
        package paths); they win over user settings of the same name, as Batch's
        own variables do.

    Returns
    -------
    dict[str, str]
        Variables to add to the process environment.
    """
    env = dict(_node_environment(node))
    tdir = posixpath.join(node.root_dir, task_dir_rel)
    env["AZ_BATCH_TASK_DIR"] = tdir
    env["AZ_BATCH_TASK_WORKING_DIR"] = posixpath.join(tdir, "wd")
    if job_id is not None:
        env["AZ_BATCH_JOB_ID"] = job_id
    if task_id is not None:
        env["AZ_BATCH_TASK_ID"] = task_id
    user: dict[str, str] = {}
    for setting in settings:
        name = setting["name"]
        if name is not None and not name.startswith("AZ_BATCH_"):
            user[name] = setting.get("value") or ""
    return {**user, **env, **(extra or {})}


def multi_instance_environment(
    hosts: Sequence[str],
    *,
    instance: int,
    master_port: int,
    task_shared_dir: str,
) -> dict[str, str]:
    """Return the variables of one instance of a multi-instance task.

    Parameters
    ----------
    hosts
        Addresses of the nodes in the gang, master (instance 0) first.
    instance
        This instance's index: 0 for the primary, 1..N-1 for subtasks.
    master_port
        Port reported in ``AZ_BATCH_MASTER_NODE`` (``addr:port``).
    task_shared_dir
        ``AZ_BATCH_TASK_SHARED_DIR``: the same path on every node.

    Returns
    -------
    dict[str, str]
        ``AZ_BATCH_HOST_LIST`` (``a,b``), ``AZ_BATCH_NODE_LIST`` (``a;b``),
        ``AZ_BATCH_MASTER_NODE``, ``AZ_BATCH_IS_CURRENT_NODE_MASTER``,
        ``AZ_BATCH_TASK_SHARED_DIR`` and ``CCP_NODES`` (``2 a 1 b 1``).
    """
    return {
        "AZ_BATCH_HOST_LIST": ",".join(hosts),
        "AZ_BATCH_NODE_LIST": ";".join(hosts),
        "AZ_BATCH_MASTER_NODE": f"{hosts[0]}:{master_port}",
        "AZ_BATCH_IS_CURRENT_NODE_MASTER": "true" if instance == 0 else "false",
        "AZ_BATCH_TASK_SHARED_DIR": task_shared_dir,
        "CCP_NODES": " ".join([str(len(hosts))] + [f"{h} 1" for h in hosts]),
    }
