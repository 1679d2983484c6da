"""`/bin/true` dispatch: hpcbatch beside its peers (Dask, Parsl) on the same SSH testbed hosts.

Setup: a testbed of 4 sshd hosts (127.0.16.1-4). On those hosts, in one run:

1. **hpcbatch**: a pool of 4 nodes x 2 task slots; N tasks ``/bin/true`` added
   (``create_tasks``) until all completed (``bench_dispatch.run_pool``: the same
   measurement as ``bench_dispatch.py``'s headline).
2. **Dask, one future per task**: a Dask scheduler in this process, one
   ``dask worker --nthreads 2`` per host started over the testbed's ssh; N
   ``client.submit(run_true)`` (``subprocess.run(["/bin/true"])``), from the first
   submit until every future is done.
3. **Parsl HighThroughputExecutor**: the interchange in this process, one
   ``process_worker_pool.py --max_workers_per_node 2`` per host started over the
   testbed's ssh (a launcher that fans the block out with ``ssh``); N
   ``python_app`` calls running ``/bin/true``, from the first call until every
   future is done. Skipped (and said so) when Parsl is not installed:
   ``pip install -e '.[peers]'``.

Every system gets an untimed warm-up (2 tasks per worker slot) first. Baseline
in the same run: raw ``subprocess.run(["/bin/true"])`` N times from one loop and
from 2 threads (``bench_dispatch.raw_spawn``). N: 2,000 (``--quick``: 300).
Figures: tasks/s, and the share of the raw one-loop rate.

    python benchmarks/bench_peers.py [--quick] [--tasks N] [--json PATH]
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from _common import node_python, parse_args, service, table, write_json
from bench_dispatch import raw_spawn, run_pool

from hpcbatch.testing import testbed

NODES = 4
SLOTS = 2
BASE_ADDRESS = "127.0.16.1"
START_TIMEOUT_S = 120.0


def run_true() -> int:
    """The task of the Dask and Parsl runs: ``/bin/true`` as a process."""
    import subprocess  # sent by value: it brings its own imports

    return subprocess.run(["/bin/true"], check=True).returncode


def timed_futures(submit: Callable[[], Any], wait: Callable[[list[Any]], Any],
                  n: int) -> float:
    """Seconds from the first of ``n`` submits until ``wait`` has seen every future done."""
    t0 = time.perf_counter()
    futures = [submit() for _ in range(n)]
    wait(futures)
    return time.perf_counter() - t0


def ssh_argv(config: Path, host: str, command: str) -> list[str]:
    return ["ssh", "-F", str(config), "-o", "BatchMode=yes", host, command]


def kill_started(marker: str) -> None:
    """Kill this user's processes whose command line holds ``marker`` (the ones we started)."""
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid != me and marker in " ".join(p.info["cmdline"] or []):
            try:
                p.kill()
            except psutil.Error:
                pass


# ------------------------------------------------------------------ hpcbatch


def run_hpcbatch(bed: testbed.Testbed, n: int, state_dir: Path) -> dict[str, Any]:
    with service(state_dir) as (client, thread):
        python = node_python(bed.directory)  # the nodes run this checkout
        client.add_hosts([{**h.model_dump(mode="json"), "python": python} for h in bed.hosts])
        r = run_pool(client, thread, SLOTS, n, floor=False, testbed_dir=bed.directory)
    print(f"  hpcbatch: {r['tasks_per_s']:.0f}/s", flush=True)
    return {"tasks": n, "wall_s": r["wall_s"], "tasks_per_s": r["tasks_per_s"],
            "how": f"pool of {NODES} nodes x {SLOTS} slots, create_tasks until completed",
            "cpu_ms_per_task": r["cpu_ms_per_task"]}


# ---------------------------------------------------------------------- Dask


@contextmanager
def dask_on(bed: testbed.Testbed, marker: str) -> Iterator[Any]:
    """A Dask scheduler here and a worker per testbed host (started over ssh); yield the client."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=0, host="127.0.0.1", scheduler_port=0,
                           dashboard_address=":0")
    client = Client(cluster)
    procs = []
    try:
        for h in bed.hosts:
            cmd = shlex.join([sys.executable, "-m", "distributed.cli.dask_worker",
                              cluster.scheduler_address, "--nthreads", str(SLOTS),
                              "--no-nanny", "--name", f"{marker}-{h.name}",
                              "--death-timeout", "10", "--no-dashboard"])
            procs.append(subprocess.Popen(ssh_argv(bed.ssh_config_path, h.name, cmd),
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        client.wait_for_workers(NODES, timeout=START_TIMEOUT_S)
        yield client
    finally:
        client.close()
        cluster.close()
        for p in procs:
            p.kill()
        kill_started(marker)


def run_dask(bed: testbed.Testbed, n: int, marker: str) -> dict[str, Any]:
    with dask_on(bed, marker) as client:
        def go(count: int) -> float:
            return timed_futures(lambda: client.submit(run_true, pure=False),
                                 client.gather, count)

        go(2 * NODES * SLOTS)  # warm-up
        wall = go(n)
    print(f"  dask: {n / wall:.0f}/s", flush=True)
    return {"tasks": n, "wall_s": wall, "tasks_per_s": n / wall,
            "how": f"{NODES} dask workers x {SLOTS} threads over ssh, one future per task"}


# --------------------------------------------------------------------- Parsl


def ssh_fanout_launcher(bed: testbed.Testbed, bin_dir: str) -> Any:
    """A Parsl launcher that starts the block's worker pool on every testbed host over ssh."""
    from parsl.launchers.base import Launcher

    class SshFanout(Launcher):
        def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int,
                     *rest: Any) -> str:
            remote = f"PATH={shlex.quote(bin_dir)}:$PATH; {command}"
            lines = [shlex.join(ssh_argv(bed.ssh_config_path, h.name, remote)) + " &"
                     for h in bed.hosts]
            return "\n".join([*lines, "wait"])

    return SshFanout(debug=False)


def parsl_logs(run_dir: Path) -> str:
    """The block's submit script and output, and the DFK's log lines about blocks and errors."""
    out = [f"--- {f}\n{f.read_text(errors='replace')[-1500:]}"
           for f in sorted(run_dir.rglob("submit_scripts/*"))]
    for f in run_dir.rglob("parsl.log"):
        lines = [ln for ln in f.read_text(errors="replace").splitlines()
                 if any(w in ln for w in ("lock", "rror", "xception"))]
        out.append(f"--- {f}\n" + "\n".join(lines[-30:]))
    return "\n".join(out)


def run_parsl(bed: testbed.Testbed, n: int, run_dir: Path) -> dict[str, Any]:
    try:
        import parsl
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider
    except ImportError:
        return {"skipped": "parsl is not installed (pip install -e '.[peers]')"}
    # Parsl starts its interchange as `interchange.py`, from this environment's bin directory.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    config = Config(
        executors=[HighThroughputExecutor(
            label="htex", address="127.0.0.1", max_workers_per_node=SLOTS,
            heartbeat_period=2, heartbeat_threshold=10,
            provider=LocalProvider(launcher=ssh_fanout_launcher(bed, bin_dir),
                                   init_blocks=1, min_blocks=1, max_blocks=1,
                                   nodes_per_block=1))],
        run_dir=str(run_dir))
    dfk = parsl.load(config)
    try:
        app = parsl.python_app(run_true, executors=["htex"])

        def go(count: int) -> float:
            return timed_futures(app, lambda fs: [f.result() for f in fs], count)

        deadline = time.monotonic() + START_TIMEOUT_S
        htex = dfk.executors["htex"]
        while sum(m["worker_count"] for m in htex.connected_managers()) < NODES * SLOTS:  # type: ignore[attr-defined]
            if time.monotonic() > deadline:
                raise TimeoutError(f"Parsl's workers did not connect\n{parsl_logs(run_dir)}")
            time.sleep(0.2)
        go(2 * NODES * SLOTS)  # warm-up
        wall = go(n)
    finally:
        dfk.cleanup()
        parsl.clear()
        kill_started(str(run_dir))
    print(f"  parsl: {n / wall:.0f}/s", flush=True)
    return {"tasks": n, "wall_s": wall, "tasks_per_s": n / wall,
            "how": f"HighThroughputExecutor, {NODES} worker pools x {SLOTS} workers over ssh, "
                   f"python_app per task", "parsl": parsl.__version__}


# ---------------------------------------------------------------------- main


def main() -> int:
    def extra(p: Any) -> None:
        p.add_argument("--tasks", type=int, help="tasks per system (default 2000; --quick 300)")
        p.add_argument("--systems", default="hpcbatch,dask,parsl",
                       help="systems to run (default %(default)s)")

    args = parse_args("bench_peers", __doc__.splitlines()[0], extra)
    n = args.tasks or (300 if args.quick else 2000)
    results: dict[str, Any] = {"benchmark": "peers", "tasks": n, "nodes": NODES,
                               "slots_per_node": SLOTS}
    raw_spawn(50, 1)  # warm-up
    raw = {"sequential": raw_spawn(n, 1), "2_threads": raw_spawn(n, 2)}
    systems: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-peers-") as tmpdir:
        tmp = Path(tmpdir)
        with testbed.up(NODES, tmp / "testbed", base_address=BASE_ADDRESS) as bed:
            wanted = args.systems.split(",")
            if "hpcbatch" in wanted:
                systems["hpcbatch"] = run_hpcbatch(bed, n, tmp / "state")
            if "dask" in wanted:
                systems["dask"] = run_dask(bed, n, f"bench-peers-{os.getpid()}")
            if "parsl" in wanted:
                systems["parsl"] = run_parsl(bed, n, tmp / "parsl")
    raw_after = {"sequential": raw_spawn(n, 1), "2_threads": raw_spawn(n, 2)}
    raw = {k: min(raw[k], raw_after[k]) for k in raw}
    results["raw_spawn_per_s"] = {k: n / v for k, v in raw.items()}
    results["systems"] = systems
    results["load_average_1_5_15_end"] = list(os.getloadavg())
    rate = results["raw_spawn_per_s"]["sequential"]
    rows: list[Sequence[Any]] = [
        [f"raw subprocess.run, {k.replace('_', ' ')} (best of before/after)", n, f"{v:,.0f}",
         f"{v / rate:.0%}"] for k, v in results["raw_spawn_per_s"].items()]
    for name, s in systems.items():
        if "skipped" in s:
            rows.append([name, n, "skipped", s["skipped"]])
        else:
            rows.append([f"{name}: {s['how']}", n, f"{s['tasks_per_s']:,.0f}",
                         f"{s['tasks_per_s'] / rate:.0%}"])
    table(f"/bin/true dispatch on {NODES} testbed hosts x {SLOTS} slots ({n} tasks each)",
          ["", "tasks", "tasks/s", "of raw one-loop rate"], rows)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
