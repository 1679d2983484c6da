"""Node provisioning: the life of a compute node's process, from launch to removal.

:class:`NodeProvisioner` starts a node on the inventory host its pool took,
through the host's :class:`~hpcbatch.providers.base.NodeProvider` (the only way
hpcbatch reaches a host; :func:`hpcbatch.providers.registry.provider_for` picks
it by default), waits for the node's Dask worker to connect, pulls the pool's
container images, runs the pool's start task, and restarts, reimages and
removes nodes. Which hosts a pool takes or gives back, and the nodes' stored
state, stay the pool manager's (:class:`hpcbatch.core.pool_manager.PoolManager`,
whose :attr:`~hpcbatch.core.pool_manager.PoolManager.provisioning` this is);
every state change goes through its
:meth:`~hpcbatch.core.pool_manager.PoolManager.set_state`.

A node passes through Batch's compute node states (REST ``ComputeNodeState``):

* ``creating``: a host was taken for the pool, nothing started yet;
* ``starting``: "the Batch service is starting on the Compute Node" -- here the
  node process is launched over SSH and its worker awaited (a rebooted or
  reimaged node comes back through ``starting`` too);
* ``waitingforstarttask``: "the StartTask has started running on the Compute
  Node, but waitForSuccess is set and the StartTask has not yet completed";
* ``starttaskfailed``: "the StartTask has failed on the Compute Node (and
  exhausted all retries), and waitForSuccess is set";
* ``unusable``: "the Compute Node cannot be used for Task execution" -- its host
  could not be reached (``NodeConnectionFailed``), its process or worker did not
  come up (``NodeStartFailed``), or the start task could not run
  (``StartTaskFailed``); a node that could not start is recovered as a lost one
  (:meth:`hpcbatch.core.node_health.NodeHealth.recover_node`).

The start task follows Batch's ``StartTask`` semantics: it runs every time a node
starts (joins the pool, reboots or is reimaged); ``waitForSuccess`` defaults to
true ("If false, the Batch service will not wait for the StartTask to complete",
REST ``StartTask.waitForSuccess``), and then no task is scheduled on the node
until it succeeded; ``maxTaskRetryCount`` retries a failed run (-1: without
limit); ``startTaskInfo`` records each run (``running``, then ``completed`` with
``result`` ``success`` or ``failure``).
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from hpcbatch.batch import identity
from hpcbatch.batch.errors import HpcbatchError, NodeConnectionError
from hpcbatch.batch.states import (
    ComputeNodeState,
    SchedulingState,
    StartTaskState,
    TaskExecutionResult,
)
from hpcbatch.batch.wire import iso, utcnow
from hpcbatch.core import image_prefetch
from hpcbatch.core.node_runtime import NodeRuntime
from hpcbatch.execution import agent, containers
from hpcbatch.execution.environment import NODE_TLS_DIR, NODE_TLS_FILES
from hpcbatch.execution.pki import issue_node_credentials
from hpcbatch.providers.base import (
    LaunchSpec,
    NodeLaunchError,
    NodeProvider,
    NodeRootRefusedError,
)
from hpcbatch.providers.inventory import Host
from hpcbatch.providers.registry import provider_for

if TYPE_CHECKING:
    from hpcbatch.core.pool_manager import PoolManager

log = logging.getLogger(__name__)

WORKER_TIMEOUT_S = 60.0
"""How long a started node has to connect its Dask worker before it is unusable."""
WORKER_POLL_S = 0.05
"""Seconds between two queries of the scheduler's workers while nodes start."""
PROVISION_THREADS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="hpcbatch-provision")
"""Threads that start nodes (blocking SSH): a pool's nodes start together, not
``asyncio``'s default few (cores + 4) at a time. Threads are made as needed."""


class NodeProvisioner:
    """Starts, restarts and removes the compute nodes of every pool (one per pool manager).

    Parameters
    ----------
    manager
        The pool manager: the pools' specifications, the engine, the service's
        TLS files and account, and the node bookkeeping (``set_state``,
        ``persist``, ``fail``, ``settle``, ``forget_node``, ``reconcile``).
    provider_factory
        Makes the :class:`~hpcbatch.providers.base.NodeProvider` of a host
        (default: :func:`hpcbatch.providers.registry.provider_for`).
    """

    def __init__(self, manager: PoolManager,
                 provider_factory: Callable[[Host], NodeProvider] = provider_for) -> None:
        self.manager = manager
        self.provider_factory = provider_factory
        self._providers: dict[str, NodeProvider] = {}
        self._workers_poll: tuple[float, asyncio.Future[dict[str, str]] | None] = (0.0, None)
        self._identity_noted: set[tuple[str, str | None]] = set()

    # ------------------------------------------------------------------- public

    def provider(self, host: Host) -> NodeProvider:
        """Return the node provider of ``host`` (one per host, kept while its node lives)."""
        provider = self._providers.get(host.name)
        if provider is None:
            provider = self._providers[host.name] = self.provider_factory(host)
        return provider

    async def provision(self, node: NodeRuntime) -> None:
        """Start a node (a new one, or one restarting) and bring it to ``idle``.

        The node goes ``starting``; its process is launched on its host
        (``unusable`` with ``NodeConnectionFailed`` or ``NodeStartFailed`` when
        it cannot be, then recovered as a lost node is); once its worker
        connected, the pool's container images are pulled and its start task runs
        (``waitingforstarttask``, then ``idle`` or ``starttaskfailed``). A node
        restarted or removed meanwhile (a newer ``generation``) is left alone.

        Parameters
        ----------
        node
            The node, ``creating`` or ``rebooting``/``reimaging``.
        """
        node.generation += 1
        gen = node.generation
        node.worker_name = f"{node.node_id}@{secrets.token_hex(4)}"
        node.errors = []
        node.worker = None
        self.manager.set_state(node, ComputeNodeState.starting)
        self.manager.persist(node)
        try:
            await asyncio.get_running_loop().run_in_executor(PROVISION_THREADS, self._launch,
                                                             node)
        except NodeConnectionError as exc:
            self.manager.unreachable_hosts[node.host.name.lower()] = str(exc)
            self._start_failed(node, "NodeConnectionFailed", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - an unexpected provider failure still names the host
            self._start_failed(node, "NodeStartFailed", f"host {node.host.name}: {exc}")
            return
        self.manager.unreachable_hosts.pop(node.host.name.lower(), None)
        await self.manager.keys.sync(node.pool_key)  # the other nodes accept this one from now on
        addr = await self._wait_for_worker(node, WORKER_TIMEOUT_S)
        if gen != node.generation or node.state == ComputeNodeState.leavingpool:
            return
        if addr is None:
            running, tail = await asyncio.to_thread(self._diagnose, node)
            self._start_failed(node, "NodeStartFailed",
                               f"host {node.host.name}: the node's worker did not connect to the "
                               f"scheduler within {WORKER_TIMEOUT_S:g} s "
                               f"({'its process is running' if running else 'its process exited'}). "
                               f"Last lines of {node.root_dir}/node.log: {tail}")
            return
        node.worker = addr
        node.last_boot_time = utcnow()
        if not await self._prefetch_images(node, gen):
            return
        if self.manager.before_start_task is not None:
            await self.manager.before_start_task(node)
        await self._run_start_task(node, gen)

    async def restart(self, node: NodeRuntime, wipe: bool = False) -> None:
        """Restart a node: close its worker, optionally wipe its root dir, provision it again.

        The node's start task runs again, as after a Batch node reboot. A node
        that left its pool while its tasks drained is not provisioned again.

        Parameters
        ----------
        node
            The node.
        wipe
            Reimage (``reimaging``: its root dir is removed first) rather than
            reboot (``rebooting``).
        """
        if node.removing or self.manager.node(node.pool_key, node.node_id) is not node:
            return
        state = ComputeNodeState.reimaging if wipe else ComputeNodeState.rebooting
        if node.worker:
            worker, node.worker = node.worker, None
            node.generation += 1
            await self.manager.engine.close_worker(worker)
        if wipe and node.root_dir:
            try:
                await asyncio.to_thread(self.provider(node.host).wipe, node.root_dir)
            except NodeRootRefusedError as exc:  # not a folder of its own: nothing removed
                self.manager.fail(node, exc.code, exc.message)
                return
        node.scheduling_state = SchedulingState.enabled
        node.start_task_info = None
        self.manager.set_state(node, state)
        await self.provision(node)

    async def remove_node(self, node: NodeRuntime) -> None:
        """Take a node out of its pool: close its worker and give its host back.

        The node goes ``leavingpool``, then its row goes and its host returns to
        the inventory (:meth:`~hpcbatch.core.pool_manager.PoolManager.forget_node`);
        every pool then reconciles, since the freed host may be what one waits for.

        The service requeues the node's tasks through ``on_node_lost`` first.
        The node loses the pool's SSH key (its ``authorized_keys`` line and its
        private key copy) and the other nodes stop accepting it (``from=``).
        """
        node.generation += 1
        node.trusted = False
        self.manager.set_state(node, ComputeNodeState.leavingpool)
        if node.used_slots:
            self.manager.on_node_lost(node)
        if node.worker and self.manager.before_remove is not None:
            await self.manager.before_remove(node)
        if node.worker:
            await self.manager.engine.close_worker(node.worker)
        elif node.root_dir:  # no worker to close: its process may still be trying to connect
            await asyncio.to_thread(self._stop_process, node)
        node.worker = None
        await asyncio.to_thread(self.manager.keys.revoke, node)
        await self.manager.keys.sync(node.pool_key)
        self.manager.forget_node(node)
        provider = self._providers.pop(node.host.name, None)
        if provider is not None:
            await asyncio.to_thread(provider.close)
        self.manager.on_change()
        for key in list(self.manager.specs):  # the freed host may be what another pool waits for
            self.manager.reconcile(key)

    def forget_pool(self, pool_key: str) -> None:
        """Forget what was noted about a deleted pool's nodes (their user-switching warnings)."""
        self._identity_noted = {n for n in self._identity_noted if n[0] != pool_key}

    def close(self) -> None:
        """Close every host's node provider (the service stops)."""
        for provider in self._providers.values():
            try:
                provider.close()
            except Exception:  # noqa: BLE001, S110 - at close, one provider's failure must not stop the others
                pass
        self._providers.clear()

    # ------------------------------------------------------------------ private

    def _launch(self, node: NodeRuntime) -> None:
        """Start the node process on its host (runs in a thread: blocking I/O).

        One :meth:`~hpcbatch.providers.base.NodeProvider.launch` per start: the
        host probe, task users, pool trust, TLS files and node process together.
        """
        host = node.host
        provider = self.provider(host)
        # The node's own identity, for this incarnation's worker name only; the
        # service's key and the CA key stay here.
        creds = issue_node_credentials(self.manager.tls, node.pool_id, node.worker_name)
        files = {}
        remote_tls = {}
        for name, data in (("ca_file", creds.ca_pem), ("cert_file", creds.cert_pem),
                           ("key_file", creds.key_pem)):
            rel = posixpath.join(NODE_TLS_DIR, NODE_TLS_FILES[name])
            files[rel] = data
            remote_tls[name] = rel  # under the node root, made absolute on the host
        config = {
            "node_id": node.node_id,
            "worker_name": node.worker_name,
            "pool_id": node.pool_id,
            "is_dedicated": not host.low_priority,  # AZ_BATCH_NODE_IS_DEDICATED
            "scheduler_address": self.manager.engine.contact_address(node.effective_address()),
            "nthreads": node.slots + 1,
            "account_name": self.manager.account_name,
            "account_url": self.manager.account_url,
            "tls": remote_tls,
            "death_timeout_s": WORKER_TIMEOUT_S,
            "env": dict(host.env),
        }
        spec = self.manager.specs[node.pool_key]
        trust_spec = self.manager.keys.spec_for(node)
        try:
            launched = provider.launch(LaunchSpec(config, files, {
                "accounts": [a.to_wire() for a in spec.user_accounts or []],
                "inter_node": bool(spec.enable_inter_node_communication)}, trust_spec))
        except NodeLaunchError as exc:
            node.root_dir = exc.root_dir or node.root_dir
            raise
        node.root_dir = launched.root_dir
        self._setup_identity(node, launched.identity)
        if trust_spec is not None:
            self.manager.keys.record(node, trust_spec, launched)

    def _setup_identity(self, node: NodeRuntime, result: Mapping[str, Any]) -> bool:
        """Record the host's user-switching answer on the node; return whether tasks switch users."""
        node.user_switching = bool(result.get("switching"))
        node.switching_note = None if node.user_switching else str(result.get("reason"))
        if not node.user_switching:  # once per pool and reason: a pool's nodes are alike
            noted = (node.pool_key, node.switching_note)
            log.log(logging.DEBUG if noted in self._identity_noted else logging.WARNING,
                    "node %s (pool %s): tasks share the node agent's identity: %s",
                    node.node_id, node.pool_id, node.switching_note)
            self._identity_noted.add(noted)
        return node.user_switching

    def _stop_process(self, node: NodeRuntime) -> None:
        """End a node process whose worker is gone or never connected (runs in a thread)."""
        if not node.root_dir:
            return
        try:
            if self.provider(node.host).stop(node.root_dir):
                log.info("node %s: stopped its node process on host %s",
                         node.node_id, node.host.name)
        except HpcbatchError as exc:
            log.warning("cannot stop the node process of %s on host %s: %s",
                        node.node_id, node.host.name, exc)

    async def _wait_for_worker(self, node: NodeRuntime, timeout_s: float) -> str | None:
        """Wait for the node's worker to register with the scheduler; its address, or None."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            addr = (await self._registered_workers()).get(node.worker_name)
            if addr:
                return addr
            await asyncio.sleep(WORKER_POLL_S)
        return None

    async def _registered_workers(self) -> dict[str, str]:
        """The scheduler's workers (name to address), one query shared by every waiting node.

        A query younger than :data:`WORKER_POLL_S` (or in flight) answers all
        nodes that wait at once, so a pool's start costs one query per poll,
        not one per node.
        """
        loop = asyncio.get_running_loop()
        at, poll = self._workers_poll
        if poll is None or (poll.done() and loop.time() - at >= WORKER_POLL_S):
            poll = asyncio.ensure_future(self.manager.engine.workers())
            self._workers_poll = (loop.time(), poll)
        try:
            return await asyncio.shield(poll)
        except Exception:  # noqa: BLE001 - the scheduler is restarting: no worker known now
            return {}

    def _start_failed(self, node: NodeRuntime, code: str, message: str) -> None:
        """A node that could not start (its host unreachable, its process or worker not up):
        ``unusable`` with ``code``, then recovered by itself as a lost node is
        (:meth:`hpcbatch.core.node_health.NodeHealth.recover_node`: restarts with backoff,
        replaced by a free host when its host stays unreachable; docs/architecture.md D2)."""
        self.manager.fail(node, code, message)
        self.manager.health.recover_node(node)

    async def _prefetch_images(self, node: NodeRuntime, gen: int) -> bool:
        """Pull the pool's ``containerImageNames`` on a node that just started (incarnation
        ``gen``), before its start task (:func:`hpcbatch.core.image_prefetch.prefetch`).
        False when the node did not start: it failed (``unusable``), or it was restarted
        or removed meanwhile.
        """
        failure = await image_prefetch.prefetch(
            self.manager.engine, self.manager.specs[node.pool_key].virtual_machine_configuration, node)
        if gen != node.generation or node.state == ComputeNodeState.leavingpool:
            return False
        if failure is not None:
            self.manager.fail(node, failure.code, failure.message, details=failure.details)
        return failure is None

    def _diagnose(self, node: NodeRuntime) -> tuple[bool, str]:
        """Whether a node's process runs, and the tail of its log (one line), for an error."""
        provider = self.provider(node.host)
        root = node.root_dir or node.host.root_dir
        try:
            running = provider.check(root)
            tail = provider.read_log(root, lines=5)
            return running, tail.strip().replace("\n", " | ") or "(empty)"
        except HpcbatchError as exc:
            return False, str(exc)

    async def _run_start_task(self, node: NodeRuntime, gen: int) -> None:
        """Run the pool's start task on a node whose worker connected (incarnation ``gen``),
        with its retries; the node ends ``idle``, or ``starttaskfailed``/``unusable``."""
        spec = self.manager.specs[node.pool_key].start_task
        if spec is None:
            self.manager.set_state(node, ComputeNodeState.idle, notify=False)
            self.manager.settle(node)
            self.manager.persist(node)
            return
        # Batch's default is true: "If false, the Batch service will not wait for the
        # StartTask to complete ... The default is true." (REST StartTask.waitForSuccess)
        wait = spec.wait_for_success is not False
        retries = spec.max_task_retry_count or 0
        if wait:
            self.manager.set_state(node, ComputeNodeState.waitingforstarttask)
        else:
            self.manager.set_state(node, ComputeNodeState.idle, notify=False)
            self.manager.settle(node)
        attempt = 0
        while True:
            started = utcnow()
            node.start_task_info = {"state": StartTaskState.running, "startTime": iso(started),
                                    "retryCount": attempt}
            run_key = f"start-{node.pool_key}-{node.node_id}-{gen}-{attempt}"
            launch = agent.Launch(
                key=run_key, task_dir=agent.STARTUP_DIR, command_line=spec.command_line,
                run_as=identity.resolve(spec.user_identity, self.manager.specs[node.pool_key], run_key),
                settings=[s.to_wire() for s in spec.environment_settings or []],
                resource_files=[r.to_wire() for r in spec.resource_files or []],
                storage=self.manager.storage, packages=self.manager.packages_for(node.pool_key),
                container=containers.launch_container(
                    spec.container_settings.to_wire() if spec.container_settings else None,
                    self.manager.specs[node.pool_key].virtual_machine_configuration),
            )
            try:
                outcome: agent.Outcome = await self.manager.engine.run_launch(node.worker or "", launch)
            except Exception as exc:  # noqa: BLE001 - any launch failure is the node's StartTaskFailed
                if gen != node.generation:
                    return
                self.manager.fail(node, "StartTaskFailed",
                                  f"host {node.host.name}: the start task could not run: {exc}")
                return
            if gen != node.generation:
                return
            ok = outcome.exit_code == 0 and outcome.failure_info is None
            info: dict[str, Any] = {
                "state": StartTaskState.completed, "startTime": iso(outcome.start_time.replace(tzinfo=None)),
                "endTime": iso(outcome.end_time.replace(tzinfo=None)),
                "retryCount": attempt,
                "result": TaskExecutionResult.success if ok else TaskExecutionResult.failure,
            }
            if outcome.exit_code is not None:
                info["exitCode"] = outcome.exit_code
            if outcome.failure_info:
                info["failureInfo"] = outcome.failure_info
            node.start_task_info = info
            if ok:
                if node.state == ComputeNodeState.waitingforstarttask:
                    self.manager.set_state(node, ComputeNodeState.idle, notify=False)
                    self.manager.settle(node)
                self.manager.persist(node)
                return
            if retries == -1 or attempt < retries:
                attempt += 1
                continue
            if wait:
                self.manager.fail(node, "StartTaskFailed",
                                  f"the start task failed on host {node.host.name} with exit code "
                                  f"{outcome.exit_code}", state=ComputeNodeState.starttaskfailed)
            self.manager.persist(node)
            return
