"""Pool readiness: an 8-node SSH-testbed pool from "Pool - Add" to every node idle.

A pool of 8 testbed nodes (``vmSize`` ``testbed``, 8 sshd daemons on
``127.0.8.1-8``) is created and ``wait_for_pool`` polls until every node is
``idle``; the pool is then deleted and its hosts return to the inventory. Best
and median of R rounds (3; ``--quick`` 2).

Baselines in the same run, what any pool start on these hosts costs at least:
(i) one ``ssh host true`` round trip, and (ii) ``ssh host true`` to the 8 hosts
in parallel (SSH connection set-up plus the login shell's start-up files; the
service opens one connection per host and runs one command per node start);
(iii) a serving node process's imports (``distributed.Worker`` and the node
agent, what :func:`hpcbatch.execution.node.serve` imports), 8 at once, and
(iv) Dask's worker import alone, 8 at once: the floor of any Dask node; (v)
the login shell's start of one command as sshd starts it, 8 at once (the login
user's shell, ``SHELL -c true`` with ``SSH_CLIENT`` set and no ``SHLVL``: bash
then reads ``~/.bashrc``, whose start-up work every SSH command pays; part of
(i)-(ii), and of each node start; ``hosts check`` warns about it). The
CPU seconds of every process of the run (service, scheduler, sshd sessions and
login shells, node processes: :func:`own_cpu`) during each pool start are
printed too, in total and by role (:func:`role`; ``ssh`` holds the SSH sessions,
the login shells and each node's ``--launch`` process up to its fork): with C cores
to itself, a pool start takes at least CPU s / C. Target: median <= 3 s.

``--simulated N`` times a pool of N ``provider: simulated`` nodes instead (the
control plane alone: no SSH, no node process; ``docs/scale.md``), the service
running as its own process, with its CPU seconds; baseline: a 10-node pool.

    python benchmarks/bench_pool_ready.py [--quick] [--rounds R] [--simulated N] [--json PATH]
"""

from __future__ import annotations

import os
import pwd
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from _common import node_python, parse_args, service, table, verdict, write_json

from hpcbatch.client.sdk import BatchClient, BatchError
from hpcbatch.testing import testbed

NODES = 8
BASE_ADDRESS = "127.0.8.1"
TARGET_S = 3.0


def parallel(argvs: list[list[str]], env: dict[str, str] | None = None) -> float:
    """Seconds to run every argv at once, until the last exits (each must succeed)."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(argvs)) as ex:
        for proc in ex.map(lambda a: subprocess.run(a, capture_output=True, check=False,
                                                    env=env, cwd=env and env.get("HOME")),
                           argvs):
            if proc.returncode != 0:
                raise RuntimeError(f"{proc.args}: {proc.stderr.decode()[-500:]}")
    return time.perf_counter() - t0


ROLES = ("service", "scheduler", "ssh", "node")
"""What each process of a run is, for the CPU breakdown (:func:`role`)."""


def role(proc: psutil.Process, me: psutil.Process) -> str:
    """``service`` (this process: service and client), ``scheduler`` (Dask's), ``ssh`` (an
    sshd of the testbed, with the sessions, login shells and ``--launch`` processes it
    reaped), or ``node`` (a node process)."""
    if proc.pid == me.pid:
        return "service"
    cmdline = " ".join(proc.cmdline())
    if "hpcbatch.node" in cmdline:
        return "node"
    # Dask's scheduler retitles its process ("dask scheduler [tls://...]").
    return "scheduler" if "dask_scheduler" in cmdline or "dask scheduler" in cmdline else "ssh"


def own_cpu(bed_dir: Path) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system, with reaped children) of this run's processes, by pid,
    with each process's :func:`role`.

    This process (the service and the client), its descendants (the scheduler,
    the testbed's sshd daemons, which reap the SSH sessions and login shells)
    and the node processes (detached: found by their log under ``bed_dir``).
    Other processes on the machine are left out, so the figure holds on a
    shared machine.
    """
    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    for p in psutil.process_iter(["cmdline"]):
        if "hpcbatch.node" in " ".join(p.info["cmdline"] or ()):
            try:
                if any(str(bed_dir) in f.path for f in p.open_files()):
                    procs.append(p)
            except psutil.Error:
                pass
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = (role(p, me), t.user + t.system + t.children_user + t.children_system)
        except psutil.Error:
            pass
    return out


def cpu_by_role(c0: dict[int, tuple[str, float]],
                c1: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two :func:`own_cpu` readings, per role."""
    spent = dict.fromkeys(ROLES, 0.0)
    for pid, (kind, value) in c1.items():
        spent[kind] += value - c0.get(pid, (kind, 0.0))[1]
    return spent


def wait_idle(client: BatchClient, pool: str, timeout_s: float = 300.0) -> list[Any]:
    """Poll until the pool's nodes are all past starting and the pool is steady; its nodes.

    One "Compute Node - List" every 50 ms while nodes start, then "Pool - Get"
    until ``allocationState`` is ``steady`` (what ``BatchClient.wait_for_pool``
    checks, with half its REST calls: the client and the service share the
    cores the nodes start on, and finer polling only takes CPU from them).
    """
    settling = {"creating", "starting", "waitingforstarttask", "rebooting", "reimaging"}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        nodes = client.list_nodes(pool)
        if (len(nodes) == NODES and not any(n.state in settling for n in nodes)
                and client.get_pool(pool).allocation_state == "steady"):
            return nodes
        time.sleep(0.05)
    raise TimeoutError(f"pool {pool} did not settle within {timeout_s:g} s")


def one_round(client: BatchClient, i: int, bed_dir: Path) -> tuple[float, dict[str, float]]:
    pool = f"ready-{i}"
    c0, t0 = own_cpu(bed_dir), time.perf_counter()
    client.create_pool({"id": pool, "vmSize": "testbed", "targetDedicatedNodes": NODES})
    nodes = wait_idle(client, pool)
    ready_s = time.perf_counter() - t0
    cpu_s = cpu_by_role(c0, own_cpu(bed_dir))
    states = [n.state for n in nodes]
    if states != ["idle"] * NODES:
        raise RuntimeError(f"pool {pool} came up as {states}")
    client.delete_pool(pool)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # its hosts go back to the inventory
        try:
            client.get_pool(pool)
        except BatchError:
            if all(h.get("poolId") is None for h in client.list_hosts()):
                break
        time.sleep(0.1)
    return ready_s, cpu_s


def simulated(nodes: int, rounds: int, json_path: Any) -> int:
    """``--simulated N``: a pool of N simulated nodes (the control plane alone), best and
    median of ``rounds`` pools, with the service's CPU seconds; baseline: a 10-node one."""
    from bench_scale import SLOTS, Service

    def one(svc: Service, pool: str, count: int) -> tuple[float, float]:
        c0, t0 = svc.cpu_s(), time.perf_counter()
        svc.client.create_pool({"id": pool, "vmSize": "sim", "targetDedicatedNodes": count,
                                "taskSlotsPerNode": SLOTS})
        got = svc.client.wait_for_pool(pool, timeout_s=600)
        ready_s, cpu_s = time.perf_counter() - t0, svc.cpu_s() - c0
        if {n.state for n in got} != {"idle"} or len(got) != count:
            raise RuntimeError(f"pool {pool} came up as {sorted({n.state for n in got})}")
        svc.client.delete_pool(pool)
        while any(h.get("poolId") for h in svc.client.list_hosts()):
            time.sleep(0.2)
        return ready_s, cpu_s

    with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-ready-sim-") as tmpdir:
        svc = Service(Path(tmpdir) / "state")
        try:
            svc.client.add_hosts([{"name": f"sim-{i:05d}", "address": "127.0.0.1",
                                   "provider": "simulated", "cores": SLOTS, "labels": ["sim"],
                                   "root_dir": f"{tmpdir}/nodes/{i}"} for i in range(nodes)])
            small = [one(svc, f"small-{i}", 10) for i in range(rounds)]
            big = [one(svc, f"big-{i}", nodes) for i in range(rounds)]
        finally:
            svc.close()
    for label, runs in ((f"{nodes} simulated nodes", big), ("baseline: 10 simulated nodes", small)):
        print(f"{label}: idle in best {min(r[0] for r in runs):.2f} s, median "
              f"{statistics.median(r[0] for r in runs):.2f} s; service CPU median "
              f"{statistics.median(r[1] for r in runs):.2f} s")
    write_json(json_path, {"benchmark": "pool_ready_simulated", "nodes": nodes,
                           "pool_ready_s": [r[0] for r in big], "service_cpu_s": [r[1] for r in big],
                           "baseline_10_nodes_s": [r[0] for r in small]})
    return 0


def main() -> int:
    def extra(p: Any) -> None:
        p.add_argument("--rounds", type=int, default=None, help="pools to time (default 3)")
        p.add_argument("--simulated", type=int, default=None, metavar="N",
                       help="time a pool of N simulated nodes instead (service as its own process)")

    args = parse_args("bench_pool_ready", __doc__.splitlines()[0], extra)
    rounds = args.rounds or (2 if args.quick else 3)
    if args.simulated:
        return simulated(args.simulated, rounds, args.json)
    results: dict[str, Any] = {"benchmark": "pool_ready", "nodes": NODES, "target_s": TARGET_S}
    with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-ready-") as tmpdir:
        tmp = Path(tmpdir)
        with testbed.up(NODES, tmp / "testbed", base_address=BASE_ADDRESS) as bed, \
                service(tmp / "state") as (client, _thread):
            python = node_python(bed.directory)
            client.add_hosts([{**h.model_dump(mode="json"), "python": python}
                              for h in bed.hosts])
            ssh = [["ssh", "-F", str(bed.ssh_config_path), h.address, "true"] for h in bed.hosts]
            serving = ("from hpcbatch.execution import node\nnode.forgo_unused_modules()\n"
                       "with node.libyaml_config():\n    from distributed import Worker\n"
                       "    import hpcbatch.execution.agent, hpcbatch.execution.guard")
            imports = [[python, "-c", serving]] * NODES
            dask_imports = [[python, "-c", "from distributed import Worker"]] * NODES
            login = [[pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh", "-c", "true"]] * NODES
            login_env = {**{k: v for k, v in os.environ.items() if k != "SHLVL"},
                         "SSH_CLIENT": "127.0.0.1 22 22", "HOME": os.path.expanduser("~")}
            parallel(ssh), parallel(imports), parallel(login, login_env)  # warm caches
            base = {"ssh_true_one_s": [parallel(ssh[:1]) for _ in range(rounds)],
                    "ssh_true_parallel_s": [parallel(ssh) for _ in range(rounds)],
                    "node_imports_parallel_s": [parallel(imports) for _ in range(rounds)],
                    "dask_worker_import_parallel_s": [parallel(dask_imports)
                                                      for _ in range(rounds)],
                    "login_shell_parallel_s": [parallel(login, login_env)
                                               for _ in range(rounds)]}
            ready, cpu, roles = [], [], []
            for i in range(rounds):
                ready_s, by_role = one_round(client, i, bed.directory)
                ready.append(ready_s)
                cpu.append(sum(by_role.values()))
                roles.append(by_role)
                print(f"  round {i + 1}: {ready_s:.2f} s, CPU {cpu[-1]:.2f} s ("
                      + ", ".join(f"{k} {v:.2f}" for k, v in by_role.items()) + ")", flush=True)
    med = statistics.median(ready)
    cores = os.cpu_count() or 1
    results.update({
        "pool_ready_s": ready, "pool_ready_median_s": med, "pool_ready_best_s": min(ready),
        "cpu_s": cpu, "cpu_by_role_s": roles, "cores": cores, **base,
        "target_met": med <= TARGET_S, "python": sys.version.split()[0]})

    def row(label: str, values: list[float]) -> list[Any]:
        return [label, min(values), statistics.median(values)]

    table(f"{NODES}-node testbed pool: Pool - Add -> every node idle ({rounds} rounds)",
          ["", "best s", "median s"],
          [row(f"hpcbatch pool of {NODES} nodes", ready),
           row(f"  its CPU seconds, all its processes ({cores} cores)", cpu),
           *(row(f"    of which {kind}", [r[kind] for r in roles]) for kind in ROLES),
           row("baseline: one ssh host true round trip", base["ssh_true_one_s"]),
           row(f"baseline: ssh host true, {NODES} hosts in parallel",
               base["ssh_true_parallel_s"]),
           row(f"baseline: node process imports, {NODES} at once",
               base["node_imports_parallel_s"]),
           row(f"baseline: Dask worker import alone, {NODES} at once",
               base["dask_worker_import_parallel_s"]),
           row(f"baseline: login shell starts a command (as sshd does), {NODES} at once",
               base["login_shell_parallel_s"])])
    print(f"target: median <= {TARGET_S:g} s -> {verdict(results['target_met'])} ({med:.2f} s)")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
