"""The pool manager: reconciles each pool's target node count against the inventory.

It takes inventory hosts for a pool (``vmSize`` selects them by label), starts a
compute node on each through its provider (ssh or local: the one narrow
:mod:`hpcbatch.providers.transport` interface), waits for the node's Dask worker, runs
the start task, watches for lost workers, and gives hosts back when a pool
shrinks or is deleted. Node states are Batch's (``ComputeNodeState``).

It holds no scheduling policy: the service asks it which nodes are ready and
how many slots they have free.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hpcbatch.batch.errors import HpcbatchError, NodeConnectionError
from hpcbatch.batch.models import PoolSpec
from hpcbatch.batch.wire import utcnow
from hpcbatch.execution import agent
from hpcbatch.execution.engine import DaskEngine
from hpcbatch.execution.tls import TlsFiles
from hpcbatch.providers.inventory import Host
from hpcbatch.providers.transport import Transport, known_hosts_line, open_transport
from hpcbatch.store.database import Store, dumps, hosts, loads, nodes

log = logging.getLogger(__name__)

READY_STATES = ("idle", "running")
"""Node states in which a node takes tasks."""

WORKER_TIMEOUT_S = 60.0
"""How long a started node has to connect its Dask worker before it is unusable."""


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
    state
        Batch ``ComputeNodeState``.
    worker
        Address of the node's Dask worker once connected.
    worker_name
        The Dask name of the node's current worker: ``{node_id}@{incarnation}``,
        so a restarted node never collides with its previous worker still
        leaving the scheduler.
    used_slots
        Slots held by tasks dispatched to the node.
    """

    pool_key: str
    pool_id: str
    node_id: str
    host: Host
    slots: int
    order: int
    state: str = "creating"
    scheduling_state: str = "enabled"
    worker: str | None = None
    root_dir: str | None = None
    used_slots: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    start_task_info: dict[str, Any] | None = None
    allocation_time: datetime = field(default_factory=utcnow)
    last_boot_time: datetime | None = None
    state_transition_time: datetime = field(default_factory=utcnow)
    total_tasks_run: int = 0
    total_tasks_succeeded: int = 0
    running: dict[str, tuple[str, str]] = field(default_factory=dict)
    generation: int = 0
    host_key: str | None = None
    ssh_user: str | None = None
    removing: bool = False
    worker_name: str = ""

    @property
    def free_slots(self) -> int:
        """Slots a new task may take now (0 unless the node is ready and enabled)."""
        if self.state not in READY_STATES or self.scheduling_state != "enabled" or not self.worker:
            return 0
        return max(0, self.slots - self.used_slots)

    def to_wire(self, base_url: str) -> dict[str, Any]:
        """Return the Batch ``ComputeNode`` JSON of this node."""
        out: dict[str, Any] = {
            "id": self.node_id,
            "url": f"{base_url}/pools/{self.pool_id}/nodes/{self.node_id}",
            "state": self.state,
            "schedulingState": self.scheduling_state,
            "stateTransitionTime": _iso(self.state_transition_time),
            "allocationTime": _iso(self.allocation_time),
            "ipAddress": self.host.address,
            "affinityId": f"TVM:{self.node_id}",
            "vmSize": ",".join(self.host.labels) or "any",
            "totalTasksRun": self.total_tasks_run,
            "totalTasksSucceeded": self.total_tasks_succeeded,
            "runningTasksCount": len(self.running),
            "runningTaskSlotsCount": self.used_slots,
            "isDedicated": True,
            "nodeAgentInfo": {"version": "hpcbatch", "lastUpdateTime": _iso(self.allocation_time)},
        }
        if self.last_boot_time:
            out["lastBootTime"] = _iso(self.last_boot_time)
        if self.start_task_info:
            out["startTaskInfo"] = self.start_task_info
        if self.errors:
            out["errors"] = self.errors
        if self.running:
            out["recentTasks"] = [
                {"taskUrl": f"{base_url}/jobs/{j}/tasks/{t}", "jobId": j, "taskId": t,
                 "taskState": "running"}
                for j, t in list(self.running.values())[:10]
            ]
        return out


_AUTHORIZE = ('umask 077; mkdir -p "$HOME/.ssh"; f="$HOME/.ssh/authorized_keys"; touch "$f"; '
              'grep -qxF "$1" "$f" || printf "%s\n" "$1" >> "$f"')
_REVOKE = ('f="$HOME/.ssh/authorized_keys"; [ -f "$f" ] || exit 0; '
           'grep -vxF "$1" "$f" > "$f.hpcbatch"; cat "$f.hpcbatch" > "$f"; rm -f "$f.hpcbatch"')


def _iso(dt: datetime | None) -> str | None:
    """Format a naive UTC datetime as Batch does (``2026-01-02T03:04:05.678901Z``)."""
    return None if dt is None else dt.isoformat(timespec="microseconds") + "Z"


class PoolManager:
    """Provisions and watches the compute nodes of every pool.

    Parameters
    ----------
    store
        The durable store (hosts and nodes tables).
    engine
        The Dask engine nodes' workers connect to.
    tls
        Certificates uploaded to each node for its worker.
    account_name, account_url
        Written into each node's identity (``AZ_BATCH_ACCOUNT_*``).
    on_change
        Called (on the event loop) whenever node capacity changes, so the
        service runs a scheduling pass.
    on_node_lost
        Called with a node whose worker disappeared, so the service requeues
        its tasks.
    storage
        The service's storage (:class:`hpcbatch.execution.transfer.StorageRef`), for
        start tasks' resource files.

    Attributes
    ----------
    packages_for
        ``packages_for(pool_key)``: the pool's application packages, resolved
        (set by the service), installed before the start task.
    deallocation
        Per pool, the ``nodeDeallocationOption`` of its latest resize or
        autoscale result (requeue by default).
    shrink
        ``shrink(node, option)``: coroutine that drains a node per option and
        removes it (set by the service, which owns the running tasks).
    """

    def __init__(
        self,
        store: Store,
        engine: DaskEngine,
        tls: TlsFiles,
        *,
        account_name: str,
        account_url: str,
        on_change: Callable[[], None],
        on_node_lost: Callable[[NodeRuntime], None],
        storage: Any = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.tls = tls
        self.account_name = account_name
        self.account_url = account_url
        self.on_change = on_change
        self.on_node_lost = on_node_lost
        self.storage = storage
        self.packages_for: Callable[[str], list[Any]] = lambda pool_key: []
        self.deallocation: dict[str, str] = {}
        self.core_quota: int | None = None
        self.quota_blocked: set[str] = set()
        self.shrink: Callable[[NodeRuntime, str], Any] = lambda node, option: self.remove_node(node)
        self.pools: dict[str, dict[str, NodeRuntime]] = {}
        self.specs: dict[str, PoolSpec] = {}
        self.targets: dict[str, int] = {}
        self.ssh_keys: dict[str, tuple[str, str]] = {}
        self._transports: dict[str, Transport] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watch: asyncio.Task[None] | None = None
        self.watch_interval_s = 1.0

    # ------------------------------------------------------------------ queries

    def nodes_of(self, pool_key: str) -> list[NodeRuntime]:
        """Return a pool's nodes in pool order."""
        return sorted(self.pools.get(pool_key, {}).values(), key=lambda n: n.order)

    def node(self, pool_key: str, node_id: str) -> NodeRuntime | None:
        """Return one node, matched case-insensitively, or None."""
        pool = self.pools.get(pool_key, {})
        return pool.get(node_id) or next(
            (n for n in pool.values() if n.node_id.lower() == node_id.lower()), None
        )

    def allocation_state(self, pool_key: str) -> str:
        """Batch ``allocationState``: ``resizing`` until every node settled, else ``steady``."""
        nodes_ = self.pools.get(pool_key, {})
        target = self.targets.get(pool_key, 0)
        settling = any(n.state in ("creating", "starting", "leavingpool") for n in nodes_.values())
        return "resizing" if settling or len(nodes_) != target and self._can_grow(pool_key) else "steady"

    def _can_grow(self, pool_key: str) -> bool:
        return (pool_key not in self.quota_blocked
                and len(self.pools.get(pool_key, {})) < self.targets.get(pool_key, 0)
                and bool(self._free_hosts(pool_key, 1)))

    # --------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the loop that watches nodes' workers."""
        self._watch = asyncio.get_running_loop().create_task(self._watch_loop())

    async def close(self, stop_nodes: bool = True) -> None:
        """Stop watching; when ``stop_nodes``, close every node's worker."""
        if self._watch:
            self._watch.cancel()
        for t in list(self._tasks):
            t.cancel()
        if stop_nodes:
            await asyncio.gather(
                *(self.engine.close_worker(n.worker) for p in self.pools.values()
                  for n in p.values() if n.worker),
                return_exceptions=True,
            )
        for tr in self._transports.values():
            try:
                tr.close()
            except Exception:
                pass
        self._transports.clear()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def set_pool(self, pool_key: str, spec: PoolSpec, target: int,
                 ssh_key: tuple[str, str] | None = None) -> None:
        """Declare a pool's specification and target node count, then reconcile.

        Parameters
        ----------
        ssh_key
            The pool's (private key, authorized_keys line) for inter-node trust.
        """
        self.specs[pool_key] = spec
        self.targets[pool_key] = target
        if ssh_key:
            self.ssh_keys[pool_key] = ssh_key
        self.pools.setdefault(pool_key, {})
        self.reconcile(pool_key)

    def capacity(self, pool_key: str) -> int:
        """How many inventory hosts the pool could ever hold (free or its own, matching vmSize)."""
        spec = self.specs[pool_key]
        with self.store.read() as conn:
            rows = conn.execute(sa.select(hosts.c.spec).where(
                sa.or_(hosts.c.pool_key.is_(None), hosts.c.pool_key == pool_key))).scalars().all()
        return sum(1 for text in rows if Host.model_validate(loads(text)).matches(spec.vm_size))

    def pool_key_path(self, node: NodeRuntime) -> str | None:
        """Path of the pool's SSH key on ``node``, or None when the pool has no SSH trust."""
        if node.pool_key not in self.ssh_keys or node.host.provider != "ssh" or not node.root_dir:
            return None
        return posixpath.join(node.root_dir, "ssh", "id_pool")

    def recover(self, pool_key: str, spec: PoolSpec, target: int,
                ssh_key: tuple[str, str] | None = None) -> None:
        """Re-create a pool's nodes after a service restart: every node starts again.

        Batch restarts the start task when a node restarts; tasks that were
        running there are requeued by the service.
        """
        self.specs[pool_key] = spec
        self.targets[pool_key] = target
        if ssh_key:
            self.ssh_keys[pool_key] = ssh_key
        pool = self.pools.setdefault(pool_key, {})
        with self.store.read() as conn:
            rows = conn.execute(sa.select(nodes, hosts.c.spec.label("host_spec"))
                                .join(hosts, hosts.c.key == nodes.c.host_key)
                                .where(nodes.c.pool_key == pool_key)).mappings().all()
        for i, row in enumerate(rows):
            status = loads(row["status"])
            node = NodeRuntime(
                pool_key=pool_key, pool_id=spec.id, node_id=row["id"],
                host=Host.model_validate(loads(row["host_spec"])), slots=spec.slots,
                order=status.get("order", i),
            )
            pool[node.node_id] = node
            self._spawn(self._provision(node))
        self.reconcile(pool_key)

    def reconcile(self, pool_key: str) -> None:
        """Grow or shrink a pool toward its target: take or give back hosts."""
        spec = self.specs.get(pool_key)
        if spec is None:
            return
        pool = self.pools.setdefault(pool_key, {})
        target = self.targets.get(pool_key, 0)
        live = [n for n in pool.values() if n.state != "leavingpool" and not n.removing]
        if len(live) < target:
            for host in self._take_hosts(pool_key, spec, target - len(live)):
                order = max((n.order for n in pool.values()), default=-1) + 1
                node = NodeRuntime(pool_key=pool_key, pool_id=spec.id, node_id=host.name,
                                   host=host, slots=spec.slots, order=order)
                pool[node.node_id] = node
                self._persist(node, insert=True)
                self._spawn(self._provision(node))
        elif len(live) > target:
            # Give back the least useful nodes first: broken, then idle, then busy.
            rank = {"unusable": 0, "starttaskfailed": 0, "offline": 0, "creating": 1,
                    "starting": 1, "idle": 2, "waitingforstarttask": 3, "running": 4}
            victims = sorted(live, key=lambda n: (rank.get(n.state, 1), n.used_slots, -n.order))
            option = self.deallocation.get(pool_key, "requeue")
            for node in victims[: len(live) - target]:
                node.removing = True
                node.scheduling_state = "disabled"
                self._spawn(self.shrink(node, option))

    def _free_hosts(self, pool_key: str, limit: int) -> list[Host]:
        spec = self.specs[pool_key]
        with self.store.read() as conn:
            rows = conn.execute(sa.select(hosts.c.spec).where(hosts.c.pool_key.is_(None))
                                .order_by(hosts.c.key)).scalars().all()
        found = []
        for text in rows:
            host = Host.model_validate(loads(text))
            if host.matches(spec.vm_size):
                found.append(host)
                if len(found) >= limit:
                    break
        return found

    def _take_hosts(self, pool_key: str, spec: PoolSpec, count: int) -> list[Host]:
        taken = self._free_hosts(pool_key, count)
        self.quota_blocked.discard(pool_key)
        if self.core_quota is not None:
            used = sum(n.host.cores for p in self.pools.values() for n in p.values())
            allowed = []
            for host in taken:
                if used + host.cores > self.core_quota:
                    break
                used += host.cores
                allowed.append(host)
            if len(allowed) < len(taken):
                self.quota_blocked.add(pool_key)
            taken = allowed
        if taken:
            with self.store.begin() as conn:
                conn.execute(hosts.update().where(hosts.c.key.in_([h.name.lower() for h in taken]))
                             .values(pool_key=pool_key))
        return taken

    def _persist(self, node: NodeRuntime, insert: bool = False) -> None:
        status = dumps({"order": node.order, "errors": node.errors})
        with self.store.begin() as conn:
            if insert:
                conn.execute(nodes.insert().values(pool_key=node.pool_key, id=node.node_id,
                                                   host_key=node.host.name.lower(),
                                                   state=node.state, status=status))
            else:
                Store.update(conn, nodes, {"pool_key": node.pool_key, "id": node.node_id},
                             state=node.state, status=status)

    def set_state(self, node: NodeRuntime, state: str) -> None:
        """Move a node to a Batch node state (recording the transition time)."""
        if node.state != state:
            node.state = state
            node.state_transition_time = utcnow()
        self.on_change()

    def _fail(self, node: NodeRuntime, code: str, message: str, state: str = "unusable") -> None:
        node.errors = [{"code": code, "message": message,
                        "errorDetails": [{"name": "Host", "value": node.host.name}]}]
        log.warning("node %s (pool %s): %s", node.node_id, node.pool_id, message)
        self.set_state(node, state)
        self._persist(node)

    # -------------------------------------------------------------- provisioning

    def _transport(self, host: Host) -> Transport:
        tr = self._transports.get(host.name)
        if tr is None:
            tr = open_transport(host)
            self._transports[host.name] = tr
        return tr

    def _launch(self, node: NodeRuntime) -> None:
        """Start the node process on its host (runs in a thread: blocking I/O)."""
        host = node.host
        tr = self._transport(host)
        probe = tr.run(
            [host.python, "-c",
             "import importlib.util as u, os, sys\n"
             "missing = [m for m in ('hpcbatch', 'distributed') if u.find_spec(m) is None]\n"
             "if missing: sys.exit('missing Python packages: ' + ', '.join(missing))\n"
             "print(os.path.expanduser(sys.argv[1]))",
             host.root_dir],
            timeout_s=60,
        )
        if probe.exit_code != 0:
            detail = (probe.stderr.strip().splitlines() or ["no output"])[-1]
            raise NodeConnectionError(
                host.name, f"{host.python} cannot run hpcbatch on this host "
                f"(exit code {probe.exit_code}): {detail}")
        root = probe.stdout.strip().splitlines()[-1]
        node.root_dir = root
        tls_dir = posixpath.join(root, "tls")
        remote_tls = {}
        for name, path in (("ca_file", self.tls.ca_file), ("cert_file", self.tls.cert_file),
                           ("key_file", self.tls.key_file)):
            dest = posixpath.join(tls_dir, path.name)
            tr.put_bytes(path.read_bytes(), dest, mode=0o600)
            remote_tls[name] = dest
        config = {
            "node_id": node.node_id,
            "worker_name": node.worker_name,
            "pool_id": node.pool_id,
            "root_dir": root,
            "scheduler_address": self.engine.contact_address(host.address),
            "nthreads": node.slots + 1,
            "account_name": self.account_name,
            "account_url": self.account_url,
            "tls": remote_tls,
            "death_timeout_s": WORKER_TIMEOUT_S,
        }
        if node.pool_key in self.ssh_keys and host.provider == "ssh":
            self._install_trust(tr, node, root)
        config_path = posixpath.join(root, "node.json")
        tr.put_bytes(dumps(config).encode(), config_path, mode=0o600)
        tr.spawn_detached([host.python, "-m", "hpcbatch.node", config_path],
                          log_path=posixpath.join(root, "node.log"))

    def _install_trust(self, tr: Transport, node: NodeRuntime, root: str) -> None:
        """Let the pool's nodes ssh to this one: authorise the pool key, give it the key."""
        private, public = self.ssh_keys[node.pool_key]
        tr.put_bytes(private.encode(), posixpath.join(root, "ssh", "id_pool"), mode=0o600)
        res = tr.run(["sh", "-c", _AUTHORIZE, "sh", public], timeout_s=30)
        if res.exit_code != 0:
            raise NodeConnectionError(node.host.name, "cannot authorise the pool's SSH key in "
                                      f"~/.ssh/authorized_keys: {res.stderr.strip()}")
        node.host_key = known_hosts_line(tr)
        who = tr.run(["id", "-un"], timeout_s=30)
        node.ssh_user = node.host.user or who.stdout.strip() or None

    def _revoke_trust(self, node: NodeRuntime) -> None:
        """Remove the pool key from the host's authorized_keys (the pool is gone)."""
        if node.pool_key not in self.ssh_keys or node.host.provider != "ssh":
            return
        try:
            self._transport(node.host).run(
                ["sh", "-c", _REVOKE, "sh", self.ssh_keys[node.pool_key][1]], timeout_s=30)
        except HpcbatchError as exc:
            log.warning("cannot revoke the pool key on host %s: %s", node.host.name, exc)

    async def _wait_for_worker(self, node: NodeRuntime, timeout_s: float) -> str | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            try:
                addr = (await self.engine.workers()).get(node.worker_name)
            except Exception:
                addr = None
            if addr:
                return addr
            await asyncio.sleep(0.1)
        return None

    async def _provision(self, node: NodeRuntime) -> None:
        node.generation += 1
        gen = node.generation
        node.worker_name = f"{node.node_id}@{secrets.token_hex(4)}"
        node.errors = []
        node.worker = None
        self.set_state(node, "starting")
        self._persist(node)
        try:
            await asyncio.to_thread(self._launch, node)
        except NodeConnectionError as exc:
            self._fail(node, "NodeConnectionFailed", str(exc))
            return
        except Exception as exc:  # an unexpected provider failure still names the host
            self._fail(node, "NodeStartFailed", f"host {node.host.name}: {exc}")
            return
        addr = await self._wait_for_worker(node, WORKER_TIMEOUT_S)
        if gen != node.generation or node.state == "leavingpool":
            return
        if addr is None:
            tail = await asyncio.to_thread(self._log_tail, node)
            self._fail(node, "NodeStartFailed",
                       f"host {node.host.name}: the node's worker did not connect to the "
                       f"scheduler within {WORKER_TIMEOUT_S:g} s. Last lines of "
                       f"{node.root_dir}/node.log: {tail}")
            return
        node.worker = addr
        node.last_boot_time = utcnow()
        await self._run_start_task(node, gen)

    def _log_tail(self, node: NodeRuntime) -> str:
        try:
            res = self._transport(node.host).run(
                ["tail", "-n", "5", posixpath.join(node.root_dir or "", "node.log")], timeout_s=20)
            return res.stdout.strip().replace("\n", " | ") or "(empty)"
        except HpcbatchError as exc:
            return str(exc)

    async def _run_start_task(self, node: NodeRuntime, gen: int) -> None:
        spec = self.specs[node.pool_key].start_task
        if spec is None:
            self.set_state(node, "idle")
            self._persist(node)
            return
        wait = bool(spec.wait_for_success)
        retries = spec.max_task_retry_count or 0
        self.set_state(node, "waitingforstarttask" if wait else "idle")
        attempt = 0
        while True:
            started = utcnow()
            node.start_task_info = {"state": "running", "startTime": _iso(started),
                                    "retryCount": attempt}
            launch = agent.Launch(
                key=f"start-{node.pool_key}-{node.node_id}-{gen}-{attempt}",
                task_dir="startup", command_line=spec.command_line,
                settings=[s.to_wire() for s in spec.environment_settings or []],
                resource_files=[r.to_wire() for r in spec.resource_files or []],
                storage=self.storage, packages=self.packages_for(node.pool_key),
            )
            try:
                outcome: agent.Outcome = await self.engine.run_launch(node.worker or "", launch)
            except Exception as exc:
                if gen != node.generation:
                    return
                self._fail(node, "StartTaskFailed",
                           f"host {node.host.name}: the start task could not run: {exc}")
                return
            if gen != node.generation:
                return
            ok = outcome.exit_code == 0 and outcome.failure_info is None
            info: dict[str, Any] = {
                "state": "completed", "startTime": _iso(outcome.start_time.replace(tzinfo=None)),
                "endTime": _iso(outcome.end_time.replace(tzinfo=None)),
                "retryCount": attempt, "result": "success" if ok else "failure",
            }
            if outcome.exit_code is not None:
                info["exitCode"] = outcome.exit_code
            if outcome.failure_info:
                info["failureInfo"] = outcome.failure_info
            node.start_task_info = info
            if ok:
                if node.state == "waitingforstarttask":
                    self.set_state(node, "idle")
                self._persist(node)
                return
            if retries == -1 or attempt < retries:
                attempt += 1
                continue
            if wait:
                self._fail(node, "StartTaskFailed",
                           f"the start task failed on host {node.host.name} with exit code "
                           f"{outcome.exit_code}", state="starttaskfailed")
            self._persist(node)
            return

    async def restart(self, node: NodeRuntime, wipe: bool = False) -> None:
        """Restart a node: close its worker, optionally wipe its root dir, provision it again.

        The node's start task runs again, as after a Batch node reboot.
        """
        state = node.state
        if node.worker:
            worker, node.worker = node.worker, None
            node.generation += 1
            await self.engine.close_worker(worker)
        if wipe and node.root_dir:
            root = node.root_dir
            await asyncio.to_thread(self._transport(node.host).run,
                                    ["sh", "-c", 'rm -rf -- "$1"/* "$1"/.[!.]*', "sh", root])
        node.scheduling_state = "enabled"
        node.start_task_info = None
        self.set_state(node, state)
        await self._provision(node)

    async def remove_node(self, node: NodeRuntime, revoke_trust: bool = False) -> None:
        """Take a node out of its pool: close its worker and give its host back.

        The service requeues the node's tasks through ``on_node_lost`` first.
        """
        node.generation += 1
        self.set_state(node, "leavingpool")
        if node.used_slots:
            self.on_node_lost(node)
        if node.worker:
            await self.engine.close_worker(node.worker)
        node.worker = None
        if revoke_trust:
            await asyncio.to_thread(self._revoke_trust, node)
        with self.store.begin() as conn:
            conn.execute(nodes.delete().where(nodes.c.pool_key == node.pool_key,
                                              nodes.c.id == node.node_id))
            conn.execute(hosts.update().where(hosts.c.key == node.host.name.lower())
                         .values(pool_key=None))
        self.pools.get(node.pool_key, {}).pop(node.node_id, None)
        tr = self._transports.pop(node.host.name, None)
        if tr is not None:
            await asyncio.to_thread(tr.close)
        self.on_change()
        for key in list(self.specs):  # the freed host may be what another pool waits for
            self.reconcile(key)

    async def delete_pool(self, pool_key: str) -> None:
        """Remove every node of a pool and forget the pool."""
        self.targets[pool_key] = 0
        await asyncio.gather(*(self.remove_node(n, revoke_trust=True)
                               for n in list(self.pools.get(pool_key, {}).values())))
        self.ssh_keys.pop(pool_key, None)
        self.pools.pop(pool_key, None)
        self.specs.pop(pool_key, None)
        self.targets.pop(pool_key, None)

    # ----------------------------------------------------------------- watching

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval_s)
            try:
                workers = await self.engine.workers()
            except Exception as exc:
                log.warning("cannot reach the Dask scheduler: %s", exc)
                continue
            for pool in list(self.pools.values()):
                for node in list(pool.values()):
                    if node.worker and node.state not in ("leavingpool", "starting", "creating"):
                        if workers.get(node.worker_name) != node.worker:
                            self.lost(node)

    def lost(self, node: NodeRuntime) -> None:
        """Mark a node whose worker disappeared ``unusable``; the service requeues its tasks."""
        if node.worker is None:
            return
        node.worker = None
        node.generation += 1
        self.on_node_lost(node)
        self._fail(node, "NodeLost",
                   f"host {node.host.name}: the node's worker disconnected from the scheduler; "
                   "its running tasks were requeued")
