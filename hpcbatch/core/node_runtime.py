"""The service's live view of a compute node (``NodeRuntime``): its state, worker, slots,
the runs it holds, and its ``ComputeNode`` JSON (Compute Node - Get/List)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from hpcbatch.batch.states import NODE_ACCEPTS_TASKS, ComputeNodeState, SchedulingState, TaskState
from hpcbatch.batch.wire import iso, utcnow
from hpcbatch.execution.multiinstance import GangNode
from hpcbatch.providers.inventory import Host, SshTarget, ssh_target

RECENT_TASKS = 10
"""How many tasks a node's ``recentTasks`` lists: its running ones first, then the latest
that ended on it (Batch documents no number)."""


AHEAD_WINDOW_S = 0.05
"""How long, at most, a run sent ahead of a free slot should wait on its node: a node
whose runs last ``d`` seconds on average (:attr:`NodeRuntime.run_s`) is sent up to
``AHEAD_WINDOW_S / d`` runs a slot ahead of its free slots (at most
:data:`AHEAD_PER_SLOT`); runs of 50 ms or more are never sent ahead."""

AHEAD_PER_SLOT = 16
"""Most runs a node holds ahead of each of its slots (:data:`AHEAD_WINDOW_S`)."""

STALL_S = 4 * AHEAD_WINDOW_S
"""A node whose slots are all held and that has reported no run's end for this long
(long runs hold them) is sent no runs ahead (the runs it gives back unstarted,
:data:`hpcbatch.execution.agent.GIVE_BACK_S`, are not sent to it again)."""

RUN_S_WEIGHT = 0.25
"""Weight of the latest run in a node's running average of run times (:attr:`NodeRuntime.run_s`)."""


class EndedTask(NamedTuple):
    """A run that ended on a node, as its ``recentTasks`` shows it (``TaskInformation``)."""

    job_id: str
    task_id: str
    subtask_id: int | None
    task_state: str
    """``completed``, or ``active`` when the task was retried or requeued."""
    start_time: datetime | None
    end_time: datetime
    exit_code: int | None
    retry_count: int
    requeue_count: int
    result: str | None
    failure_info: dict[str, Any] | None


@dataclass
class NodeRuntime:
    """The service's live view of one compute node.

    Attributes
    ----------
    pool_key, pool_id
        The pool (lower-cased key and ID as given).
    node_id
        Batch node ID: the inventory host's name.
    host
        The inventory host the node runs on.
    slots
        ``taskSlotsPerNode`` of the pool.
    order
        Position of the node in its pool (placement tie-breaker).
    vm_size
        The pool's ``vmSize``, which the node reports as its own (Batch's
        ``ComputeNode.vmSize``); the host's labels when empty.
    state
        Batch ``ComputeNodeState``.
    worker
        Address of the node's Dask worker once connected.
    worker_name
        The Dask name of the node's current worker: ``{node_id}@{incarnation}``,
        so a restarted node never collides with its previous worker still
        leaving the scheduler.
    used_slots
        Slots held by tasks dispatched to the node (those sent ahead of a free
        slot included, :attr:`ahead_slots`).
    run_s
        Running average of how long the node's task runs last, from start to
        end as the node reports them (seconds); None before the first.
    """

    pool_key: str
    pool_id: str
    node_id: str
    host: Host
    slots: int
    order: int
    vm_size: str = ""
    state: str = ComputeNodeState.creating
    scheduling_state: str = SchedulingState.enabled
    worker: str | None = None
    root_dir: str | None = None
    used_slots: int = 0
    run_s: float | None = None
    last_end: float = 0.0
    """``time.monotonic()`` when the service last learned that a run of the node ended."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    start_task_info: dict[str, Any] | None = None
    allocation_time: datetime = field(default_factory=utcnow)
    last_boot_time: datetime | None = None
    state_transition_time: datetime = field(default_factory=utcnow)
    total_tasks_run: int = 0
    total_tasks_succeeded: int = 0
    running: dict[str, tuple[str, str]] = field(default_factory=dict)
    ended: deque[EndedTask] = field(default_factory=lambda: deque(maxlen=RECENT_TASKS))
    """The latest runs that ended here, oldest first (the node's ``recentTasks``)."""
    generation: int = 0
    host_key: str | None = None
    ssh_user: str | None = None
    removing: bool = False
    worker_name: str = ""
    user_switching: bool | None = None
    """Whether the node runs tasks as their own users (None: not known yet)."""
    switching_note: str | None = None
    """Why tasks share the node agent's identity, when they do."""
    trusted: bool = False
    """The node holds the pool's SSH key (counted in its ``from=`` list)."""
    trust_user: str | None = None
    """The user whose ``authorized_keys`` hold the pool key on this node (None: login user)."""
    trust_addresses: tuple[str, ...] = ()
    """The node's addresses in its pool key's ``from=`` lists (its address, resolved)."""
    trust_from: tuple[str, ...] | None = None
    """The ``from=`` addresses last written on this node (None: no key installed)."""
    target: SshTarget | None = None
    """Where SSH really goes for the node's host (the ssh config's ``HostName`` and
    ``Port`` for an alias, :func:`~hpcbatch.providers.inventory.ssh_target`), read once:
    :meth:`ssh_target`."""

    def ssh_target(self) -> SshTarget:
        """The node's effective SSH target (:attr:`target`, read from the ssh config once).

        Its address is the node's ``ipAddress``, its ``AZ_BATCH_HOST_LIST`` entry, where
        the pool's other nodes reach it over SSH and what its pool key's ``from=`` lists
        name; its port is where their MPI launchers connect.

        Returns
        -------
        SshTarget
            Address, port, user and identity file as SSH uses them.
        """
        if self.target is None:
            self.target = ssh_target(self.host)
        return self.target

    def gang_node(self) -> GangNode:
        """What a multi-instance task's gang knows of this node: its ID, where the other
        nodes reach its sshd (:meth:`ssh_target`'s address and port, not the inventory's
        alias, which only this machine's ssh config knows), its user, root, worker and
        host key.

        Returns
        -------
        GangNode
            The node as :func:`hpcbatch.execution.multiinstance.ssh_files` and
            :func:`~hpcbatch.execution.multiinstance.launches` take it.
        """
        target = self.ssh_target()
        return GangNode(node_id=self.node_id, address=target.address, port=target.port,
                        user=self.ssh_user, root_dir=self.root_dir or "",
                        worker=self.worker or "", host_key=self.host_key)

    def effective_address(self) -> str:
        """The node's ``ipAddress``: :meth:`ssh_target`'s address (an alias's ``HostName``)."""
        return self.ssh_target().address

    @property
    def free_slots(self) -> int:
        """Slots a new task may take now (0 unless the node is ready and enabled)."""
        if self.state not in NODE_ACCEPTS_TASKS or self.scheduling_state != SchedulingState.enabled or not self.worker:
            return 0
        return max(0, self.slots - self.used_slots)

    @property
    def ahead_slots(self) -> int:
        """Slots' worth of short runs the node may take now beyond its free slots.

        The service sends them with its other runs; the node starts each when
        a slot frees (:class:`hpcbatch.execution.agent.NodeAgent`), so a slot
        does not wait for the service between two short runs, and their
        outcomes travel together. Only while the node's runs last under
        :data:`AHEAD_WINDOW_S` on average (a task so sent then waits on the
        node, shown ``running``, about that long; longer behind a long run
        that lands among short ones), never on simulated nodes, 0 when the
        node takes no tasks, and 0 while its slots are all held and no run has
        ended for :data:`STALL_S` (long runs hold them).
        """
        if (self.run_s is None or self.run_s >= AHEAD_WINDOW_S
                or self.host.provider == "simulated"
                or self.state not in NODE_ACCEPTS_TASKS or self.scheduling_state != SchedulingState.enabled
                or not self.worker):
            return 0
        if self.used_slots >= self.slots and time.monotonic() - self.last_end > STALL_S:
            return 0  # long runs hold every slot: pile nothing there (STALL_S)
        per_slot = min(AHEAD_PER_SLOT, int(AHEAD_WINDOW_S / max(self.run_s, 1e-4)))
        room = self.slots * (1 + per_slot) - self.used_slots
        return max(0, min(room, self.slots * per_slot))

    def note_run_time(self, seconds: float) -> None:
        """Add a task run's duration (seconds, start to end) to :attr:`run_s`."""
        seconds = max(0.0, seconds)
        self.run_s = seconds if self.run_s is None else (
            self.run_s + RUN_S_WEIGHT * (seconds - self.run_s))
        self.last_end = time.monotonic()

    def to_wire(self, base_url: str) -> dict[str, Any]:
        """Return the Batch ``ComputeNode`` JSON of this node."""
        out: dict[str, Any] = {
            "id": self.node_id,
            "url": f"{base_url}/pools/{self.pool_id}/nodes/{self.node_id}",
            "state": self.state,
            "schedulingState": self.scheduling_state,
            "stateTransitionTime": iso(self.state_transition_time),
            "allocationTime": iso(self.allocation_time),
            "ipAddress": self.effective_address(),
            "affinityId": f"TVM:{self.node_id}",
            "vmSize": self.vm_size or ",".join(self.host.labels) or "any",
            "totalTasksRun": self.total_tasks_run,
            "totalTasksSucceeded": self.total_tasks_succeeded,
            "runningTasksCount": len(self.running),
            "runningTaskSlotsCount": self.used_slots,
            "isDedicated": not self.host.low_priority,
            "nodeAgentInfo": {"version": "hpcbatch", "lastUpdateTime": iso(self.allocation_time)},
        }
        if self.last_boot_time:
            out["lastBootTime"] = iso(self.last_boot_time)
        if self.start_task_info:
            out["startTaskInfo"] = self.start_task_info
        if self.errors:
            out["errors"] = self.errors
        if self.running or self.ended:
            out["recentTasks"] = self.recent_tasks(base_url)
        return out

    def recent_tasks(self, base_url: str) -> list[dict[str, Any]]:
        """Batch ``recentTasks``: "the execution information for the most recent tasks that
        ran on this compute node" (``TaskInformation``), at most :data:`RECENT_TASKS`: the
        running ones, then those that ended here, latest first."""
        out: list[dict[str, Any]] = [
            {"taskUrl": f"{base_url}/jobs/{j}/tasks/{t}", "jobId": j, "taskId": t,
             "taskState": TaskState.running}
            for j, t in list(self.running.values())[:RECENT_TASKS]]
        for e in reversed(self.ended):
            if len(out) == RECENT_TASKS:
                break
            info: dict[str, Any] = {"endTime": iso(e.end_time), "retryCount": e.retry_count,
                                    "requeueCount": e.requeue_count}
            if e.start_time is not None:
                info["startTime"] = iso(e.start_time)
            if e.exit_code is not None:
                info["exitCode"] = e.exit_code
            if e.result is not None:
                info["result"] = e.result
            if e.failure_info is not None:
                info["failureInfo"] = e.failure_info
            entry: dict[str, Any] = {"taskUrl": f"{base_url}/jobs/{e.job_id}/tasks/{e.task_id}",
                                     "jobId": e.job_id, "taskId": e.task_id}
            if e.subtask_id is not None:
                entry["subtaskId"] = e.subtask_id
            entry.update(taskState=e.task_state, executionInfo=info)
            out.append(entry)
        return out
