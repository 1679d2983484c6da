"""Container runs: the runtime argv that runs a task's command line in its image.

A task with ``containerSettings`` on a pool whose ``virtualMachineConfiguration``
has a ``containerConfiguration`` runs its command line in ``imageName`` through a
container runtime found on the node's task ``PATH`` (Batch: "Run container
applications on Azure Batch"). As Batch does, the node root directory
(``AZ_BATCH_NODE_ROOT_DIR``: the task, shared, startup and applications
directories) is mounted at the same path, the working directory is the task's
working directory unless ``workingDirectory`` is ``containerImageDefault``, and the
task's environment variables are passed by name (``-e NAME``: their values come from
the runtime's own environment and never appear in its argv). Nothing here goes
through a shell. Pure: no process is started.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

RUNTIMES: dict[str, tuple[str, ...]] = {
    "dockerCompatible": ("docker", "podman"),
    "criCompatible": ("podman", "nerdctl", "docker"),
}
"""Runtime programs looked for on the task ``PATH``, in order, per ``containerConfiguration.type``."""

TYPE_KEY = "containerType"
"""Key of the pool's ``containerConfiguration.type`` in a launch's container dict."""


def launch_container(settings: Mapping[str, Any] | None,
                     vm_config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The container dict a launch carries: the task's ``containerSettings`` and its pool's type.

    Parameters
    ----------
    settings
        The task's ``containerSettings`` wire dict, or None.
    vm_config
        The pool's ``virtualMachineConfiguration`` wire dict, or None (pool unknown).

    Returns
    -------
    dict or None
        None for a task without container settings; else the settings with
        :data:`TYPE_KEY` set to the pool's container type, or None when the pool
        has no ``containerConfiguration`` (the agent then fails the task).
    """
    if not settings:
        return None
    cc = (vm_config or {}).get("containerConfiguration") or {}
    return {**settings, TYPE_KEY: cc.get("type")}


def runtime_names(container_type: str | None) -> tuple[str, ...]:
    """The runtime programs looked for for a ``containerConfiguration.type`` (none if unknown)."""
    return RUNTIMES.get(container_type or "", ())


def find_runtime(container_type: str | None, path: str) -> str | None:
    """The first runtime of :func:`runtime_names` found on ``path`` (a ``PATH`` value), or None."""
    for name in runtime_names(container_type):
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def container_argv(runtime: str, container: Mapping[str, Any], command: Sequence[str], *,
                   root_dir: str, working_dir: str, env_names: Iterable[str]) -> list[str]:
    """The argv that runs ``command`` in the container.

    Parameters
    ----------
    runtime
        Path of the runtime program (:func:`find_runtime`).
    container
        The launch's container dict (``imageName``, ``containerRunOptions``,
        ``workingDirectory``).
    command
        The task's command argv (its command line split with POSIX shell rules).
    root_dir
        The node root directory (absolute), mounted at the same path.
    working_dir
        The task's working directory (absolute), used unless ``workingDirectory``
        is ``containerImageDefault``.
    env_names
        Names of the task's environment variables, passed as ``-e NAME``.

    Returns
    -------
    list of str
        ``runtime run --rm --network host --init -v root:root [-w wd] -e NAME...
        options... image command...``.

    Raises
    ------
    ValueError
        ``containerRunOptions`` cannot be split (unbalanced quotes).
    """
    argv = [runtime, "run", "--rm", "--network", "host", "--init",
            "-v", f"{root_dir}:{root_dir}"]
    if container.get("workingDirectory", "taskWorkingDirectory") != "containerImageDefault":
        argv += ["-w", working_dir]
    for name in sorted(env_names):
        argv += ["-e", name]
    argv += shlex.split(container.get("containerRunOptions") or "")
    argv.append(container["imageName"])
    argv += list(command)
    return argv
