"""Multi-instance (MPI) tasks: validation, per-instance launches, the gang run.

Implements "Use multi-instance tasks to run Message Passing Interface (MPI)
applications in Batch" (reference: azure-batch-docs-2017.txt):

* the task gets ``numberOfInstances`` nodes at once (see
  :func:`hpcbatch.core.scheduling.place_gang`); instance 0, the primary, runs on the
  master node, subtasks 1..N-1 on the others;
* every instance runs the coordination command (in the task directory, which
  is also ``AZ_BATCH_TASK_SHARED_DIR``); processes it leaves in the background
  keep running;
* once every coordination command has succeeded, the primary runs the
  application command (the task's command line);
* the primary's exit ends the task with its exit code, and every instance's
  processes are killed, daemons included. A failing coordination command fails
  the whole task and ``failureInfo`` names the node.

Inter-node trust: a pool with inter-node communication has its own SSH key,
authorised on each of its hosts. The primary gets an ``ssh`` wrapper with a
config naming every host of the gang (address, port, user, the pool key, the
hosts' known keys), and ``HYDRA_LAUNCHER_EXEC`` / ``OMPI_MCA_plm_rsh_agent`` /
``I_MPI_HYDRA_BOOTSTRAP_EXEC`` point MPICH, Open MPI and Intel MPI at it, so
``mpiexec -hosts $AZ_BATCH_HOST_LIST`` just works.
"""

from __future__ import annotations

import asyncio
import ipaddress
import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpcbatch.batch.errors import InvalidPropertyValueError
from hpcbatch.batch.identity import RunAs
from hpcbatch.batch.models import PoolSpec, TaskSpec
from hpcbatch.execution import agent, transfer
from hpcbatch.execution.environment import multi_instance_environment

if TYPE_CHECKING:
    from hpcbatch.execution.engine import DaskEngine

MASTER_PORT = 6000
"""Port Batch reports in ``AZ_BATCH_MASTER_NODE`` (``addr:6000``)."""

SSH_WRAPPER = "ssh/ssh"
"""The primary's ssh wrapper, relative to its task directory."""


def validate(spec: TaskSpec, pool: PoolSpec | None, capacity: int | None) -> int:
    """Check a multi-instance task against its pool when it is added.

    Batch leaves such a task active forever; hpcbatch says why at once.

    Parameters
    ----------
    spec
        The task being added.
    pool
        The job's pool, or None when it does not exist (yet).
    capacity
        How many hosts the pool can ever have (inventory hosts matching its
        ``vmSize``), or None when unknown.

    Returns
    -------
    int
        The number of instances (1 for an ordinary task).

    Raises
    ------
    InvalidPropertyValueError
        The pool lacks inter-node communication, has more than one task slot
        per node, or can never have enough nodes; or requiredSlots is not 1;
        or the task runs as a task-scope auto-user or a named user account.
    """
    mis = spec.multi_instance_settings
    if mis is None:
        return 1
    n = mis.number_of_instances or 1
    name = "multiInstanceSettings.numberOfInstances"
    ui = spec.user_identity
    if ui is not None and (ui.user_name is not None or (
            ui.auto_user is not None and ui.auto_user.scope == "task"
            and ui.auto_user.elevation_level != "admin")):
        raise InvalidPropertyValueError(
            "userIdentity", ui.user_name or "autoUser.scope task",
            "a multi-instance task reaches the other nodes as the pool's auto-user, for which "
            "inter-node SSH is set up: use the pool's auto-user (the default, or autoUser "
            "with scope pool)")
    if spec.required_slots not in (None, 1):
        raise InvalidPropertyValueError("requiredSlots", spec.required_slots,
                                        "a multi-instance task takes exactly 1 slot per node")
    if pool is None:
        return n
    if not pool.enable_inter_node_communication:
        raise InvalidPropertyValueError(
            name, n, f"pool {pool.id} does not enable inter-node communication "
            "(enableInterNodeCommunication), which multi-instance tasks require")
    if pool.slots != 1:
        raise InvalidPropertyValueError(
            name, n, f"pool {pool.id} has taskSlotsPerNode {pool.slots}; multi-instance "
            "tasks need a pool with taskSlotsPerNode 1")
    if capacity is not None and n > capacity:
        raise InvalidPropertyValueError(
            name, n, f"pool {pool.id} can never have {n} nodes: the inventory holds only "
            f"{capacity} host(s) matching vmSize '{pool.vm_size}'")
    return n


@dataclass(frozen=True)
class GangNode:
    """What a gang needs to know of one of its nodes.

    Attributes
    ----------
    node_id, address, port, user
        The node and how to reach its sshd.
    root_dir
        Absolute node root directory.
    worker
        Dask worker address.
    host_key
        ``known_hosts`` line for the node's sshd, or None (local nodes).
    """

    node_id: str
    address: str
    port: int
    user: str | None
    root_dir: str
    worker: str
    host_key: str | None = None


def ssh_files(nodes: Sequence[GangNode], primary_task_dir: str, identity_file: str) -> dict[str, bytes]:
    """Return the primary's ``ssh/config``, ``ssh/known_hosts`` and ``ssh/ssh`` wrapper.

    Parameters
    ----------
    nodes
        The gang, master first.
    primary_task_dir
        Absolute task directory on the master node.
    identity_file
        Absolute path of the pool's private key on the master node.
    """
    sshdir = posixpath.join(primary_task_dir, "ssh")
    known = posixpath.join(sshdir, "known_hosts")
    blocks = []
    # Nodes sharing one machine on loopback addresses (the testbed): connect from the
    # master's own address, which the pool key's from= list names (else 127.0.0.1).
    bind = [f"    BindAddress {nodes[0].address}"] if _is_loopback(nodes[0].address) else []
    for n in nodes:
        lines = [f"Host {n.address}", f"    HostName {n.address}", f"    Port {n.port}",
                 f"    IdentityFile {identity_file}", "    IdentitiesOnly yes",
                 f"    UserKnownHostsFile {known}", "    StrictHostKeyChecking yes",
                 "    BatchMode yes", "    LogLevel ERROR", *bind]
        if n.user:
            lines.insert(3, f"    User {n.user}")
        blocks.append("\n".join(lines))
    config = "\n\n".join(blocks) + "\n"
    known_hosts = "".join(f"{n.host_key}\n" for n in nodes if n.host_key)
    wrapper = f"#!/bin/sh\nexec ssh -F {shlex.quote(posixpath.join(sshdir, 'config'))} \"$@\"\n"
    return {"ssh/config": config.encode(), "ssh/known_hosts": known_hosts.encode(),
            SSH_WRAPPER: wrapper.encode()}


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def launches(
    spec: TaskSpec,
    *,
    key: str,
    job_id: str,
    task_dir: str,
    nodes: Sequence[GangNode],
    settings: list[dict[str, Any]],
    max_wall_clock_s: float | None,
    identity_file: str | None,
    local_python: str | None = None,
    extra_env: dict[str, str] | None = None,
    io: dict[str, Any] | None = None,
    storage: transfer.StorageRef | None = None,
    run_as: RunAs | None = None,
) -> tuple[list[agent.Launch], agent.Launch]:
    """Build the coordination launch of every instance and the primary's application launch.

    Parameters
    ----------
    spec
        The multi-instance task.
    key
        The run key; instance ``i`` runs under ``{key}.{i}``, the application under ``key``.
    task_dir
        Task directory relative to each node's root (the same on every node).
    nodes
        The gang, master first.
    settings
        Environment settings (job's common ones first).
    max_wall_clock_s
        The task's wall-clock limit, applied to every instance.
    identity_file
        Pool key path on the master, or None when the pool has no SSH trust.
    local_python
        For a gang of local nodes: the interpreter that runs
        :mod:`hpcbatch.providers.locallaunch` as the MPI launchers' ``ssh``.
    extra_env
        Service variables for every instance (storage, job manager credentials).
    io
        The primary's resource files, output files and log settings
        (:class:`hpcbatch.execution.agent.Launch` fields); the common resource files go
        to every instance's task directory.
    storage
        The service storage, for the common resource files.
    run_as
        The user every instance runs as (the task's ``userIdentity``).

    Returns
    -------
    (list of Launch, Launch)
        Coordination launches (empty list when there is no coordination
        command) and the application launch.
    """
    mis = spec.multi_instance_settings
    assert mis is not None
    hosts = [n.address for n in nodes]
    primary_dir = posixpath.join(nodes[0].root_dir, task_dir)
    trust: dict[str, str] = {}
    files: dict[str, bytes] = {}
    if identity_file or local_python:
        wrapper = posixpath.join(primary_dir, SSH_WRAPPER)
        trust = {"HYDRA_LAUNCHER_EXEC": wrapper, "OMPI_MCA_plm_rsh_agent": wrapper,
                 "I_MPI_HYDRA_BOOTSTRAP": "ssh", "I_MPI_HYDRA_BOOTSTRAP_EXEC": wrapper}
        if identity_file:
            files = ssh_files(nodes, primary_dir, identity_file)
        else:
            files = {SSH_WRAPPER: (f"#!/bin/sh\nexec {shlex.quote(local_python or '')} "
                                   "-m hpcbatch.providers.locallaunch \"$@\"\n").encode()}

    def env(i: int) -> dict[str, str]:
        shared = posixpath.join(nodes[i].root_dir, task_dir)
        return {**(extra_env or {}), **multi_instance_environment(
            hosts, instance=i, master_port=MASTER_PORT, task_shared_dir=shared), **trust}

    common = [r.to_wire() for r in mis.common_resource_files or []]
    coordination_line = mis.coordination_command_line or ("/bin/true" if common else None)
    coordination = []
    if coordination_line:
        for i, _ in enumerate(nodes):
            coordination.append(agent.Launch(
                key=f"{key}.{i}", task_dir=task_dir, command_line=coordination_line,
                job_id=job_id, task_id=spec.id, settings=settings, extra_env=env(i),
                max_wall_clock_s=max_wall_clock_s, keep_background=True,
                resource_files=common, resource_dir=".", storage=storage,
                stdout_name="coordination-stdout.txt" if i == 0 else "stdout.txt",
                stderr_name="coordination-stderr.txt" if i == 0 else "stderr.txt",
                files=files if i == 0 else {}, run_as=run_as,
                container=(io or {}).get("container"),
            ))
    app = agent.Launch(
        key=key, task_dir=task_dir, command_line=spec.command_line, job_id=job_id,
        task_id=spec.id, settings=settings, extra_env=env(0),
        max_wall_clock_s=max_wall_clock_s, files=files, run_as=run_as, **(io or {}),
    )
    return coordination, app


@dataclass
class InstanceResult:
    """How one subtask (instance 1..N-1) ended, for ``subtasksinfo``."""

    instance: int
    node_id: str
    outcome: agent.Outcome | None
    error: str | None = None


async def run_gang(engine: DaskEngine, nodes: Sequence[GangNode], coordination: Sequence[agent.Launch],
                   app: agent.Launch) -> tuple[agent.Outcome | None, str | None, list[InstanceResult]]:
    """Run a multi-instance task on its gang and end every instance's processes.

    Parameters
    ----------
    engine
        The :class:`hpcbatch.execution.engine.DaskEngine`.
    nodes
        The gang, master first.
    coordination, app
        From :func:`launches`.

    Returns
    -------
    (Outcome or None, str or None, list of InstanceResult)
        The task's outcome (the primary's, or a failure naming the node whose
        coordination command failed), an error text when no outcome came
        back, and each subtask's result.
    """
    # Coordination commands may leave daemons behind; they end with the task.
    instance_keys = [(n, f"{app.key}.{i}") for i, n in enumerate(nodes)] if coordination else []
    results: list[InstanceResult] = []
    try:
        if coordination:
            outs = await asyncio.gather(*(engine.run_launch(n.worker, launch)
                                          for n, launch in zip(nodes, coordination)),
                                        return_exceptions=True)
            failed: tuple[int, GangNode, agent.Outcome | None, str | None] | None = None
            for i, (n, out) in enumerate(zip(nodes, outs)):
                if isinstance(out, BaseException):
                    results.append(InstanceResult(i, n.node_id, None, f"{type(out).__name__}: {out}"))
                    failed = failed or (i, n, None, str(out))
                else:
                    results.append(InstanceResult(i, n.node_id, out))
                    if (out.exit_code != 0 or out.failure_info) and failed is None:
                        failed = (i, n, out, None)
            if failed is not None:
                i, n, out, err = failed
                what = f"exit code {out.exit_code}" if out and out.exit_code is not None else (
                    out.failure_info["message"] if out and out.failure_info else err)
                message = (f"The coordination command failed on node {n.node_id} "
                           f"({n.address}, instance {i}): {what}")
                failure = {"category": "usererror", "code": "CoordinationCommandFailed",
                           "message": message,
                           "details": [{"name": "NodeId", "value": n.node_id}]}
                base = out or next((r.outcome for r in results if r.outcome), None)
                if base is None:
                    return None, message, results[1:]
                return agent.Outcome(out.exit_code if out else None, base.start_time,
                                     base.end_time, failure, base.task_root_dir,
                                     nodes[0].node_id), None, results[1:]
        else:
            results = [InstanceResult(i, n.node_id, None) for i, n in enumerate(nodes)]
        outcome = await engine.run_launch(nodes[0].worker, app)
        return await _explain_not_found(engine, nodes[0], app, outcome), None, results[1:]
    finally:
        await asyncio.shield(asyncio.gather(
            *(engine.kill_tagged(n.worker, k) for n, k in instance_keys),
            return_exceptions=True))


COMMAND_NOT_FOUND = 127
"""POSIX shells' exit code for a command they cannot find (an MPI launcher not on ``PATH``)."""
STDERR_HEAD_BYTES = 4096
"""How many bytes from the start of the primary's ``stderr.txt`` :func:`_explain_not_found` reads."""


async def _explain_not_found(engine: DaskEngine, master: GangNode, app: agent.Launch,
                             outcome: agent.Outcome) -> agent.Outcome:
    """Put the shell's reason in ``failureInfo`` when the application command exits 127.

    A launcher missing from the task's ``PATH`` (``mpiexec: not found``, or the
    message of :func:`hpcbatch.execution.mpi.launcher_check` naming the node and
    the ``PATH`` searched) is then visible in the task's ``failureInfo``, not only
    in ``stderr.txt``. Costs one read of the file, only on that exit code.
    """
    info = outcome.failure_info
    if outcome.exit_code != COMMAND_NOT_FOUND or not info or info.get("code") != "FailureExitCode":
        return outcome
    try:
        data = await engine.read_file(master.worker, posixpath.join(app.task_dir, app.stderr_name),
                                      0, STDERR_HEAD_BYTES)
    except Exception:  # noqa: BLE001 - the reason is a courtesy: the outcome stands without it
        return outcome
    lines = [ln.strip() for ln in (data or b"").decode(errors="replace").splitlines() if ln.strip()]
    if not lines:
        return outcome
    reason = lines[-1][:1000]
    details = [*info.get("details", []), {"name": "NodeId", "value": master.node_id},
               {"name": "Reason", "value": reason}]
    failure = {**info, "message": f"{info['message']} On node {master.node_id}: {reason}",
               "details": details}
    return agent.Outcome(outcome.exit_code, outcome.start_time, outcome.end_time, failure,
                         outcome.task_root_dir, outcome.node_id)
