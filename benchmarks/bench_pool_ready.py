"""Pool readiness: an 8-node SSH-testbed pool from "Pool - Add" to every node idle.

A pool of 8 testbed nodes (``vmSize`` ``testbed``, 8 sshd daemons on
``127.0.8.1-8``) is created and ``wait_for_pool`` polls until every node is
``idle``; the pool is then deleted and its hosts return to the inventory. Best
and median of R rounds (3; ``--quick`` 2).

Baselines in the same run, what any pool start on these hosts costs at least:
(i) ``ssh host true`` to the 8 hosts in parallel (SSH connection set-up; the
service uses one connection per host); (ii) a node process's imports,
``python -c "import hpcbatch.execution.node"``, 8 at once (what every node
pays before its worker can register). Target: median <= 3 s.

    python benchmarks/bench_pool_ready.py [--quick] [--rounds R] [--json PATH]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import node_python, parse_args, service, table, verdict, write_json

from hpcbatch.client.sdk import BatchClient, BatchError
from hpcbatch.testing import testbed

NODES = 8
BASE_ADDRESS = "127.0.8.1"
TARGET_S = 3.0


def parallel(argvs: list[list[str]]) -> float:
    """Seconds to run every argv at once, until the last exits (each must succeed)."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(argvs)) as ex:
        for proc in ex.map(lambda a: subprocess.run(a, capture_output=True, check=False), argvs):
            if proc.returncode != 0:
                raise RuntimeError(f"{proc.args}: {proc.stderr.decode()[-500:]}")
    return time.perf_counter() - t0


def one_round(client: BatchClient, i: int) -> float:
    pool = f"ready-{i}"
    t0 = time.perf_counter()
    client.create_pool({"id": pool, "vmSize": "testbed", "targetDedicatedNodes": NODES})
    nodes = client.wait_for_pool(pool, timeout_s=300, poll_interval_s=0.02)
    ready_s = time.perf_counter() - t0
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
    return ready_s


def main() -> int:
    def extra(p: Any) -> None:
        p.add_argument("--rounds", type=int, default=None, help="pools to time (default 3)")

    args = parse_args("bench_pool_ready", __doc__.splitlines()[0], extra)
    rounds = args.rounds or (2 if args.quick else 3)
    results: dict[str, Any] = {"benchmark": "pool_ready", "nodes": NODES, "target_s": TARGET_S}
    with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-ready-") as tmpdir:
        tmp = Path(tmpdir)
        with testbed.up(NODES, tmp / "testbed", base_address=BASE_ADDRESS) as bed, \
                service(tmp / "state") as (client, _thread):
            python = node_python(bed.directory)
            client.add_hosts([{**h.model_dump(mode="json"), "python": python}
                              for h in bed.hosts])
            ssh = [["ssh", "-F", str(bed.ssh_config_path), h.address, "true"] for h in bed.hosts]
            imports = [[python, "-c", "import hpcbatch.execution.node"]] * NODES
            parallel(ssh), parallel(imports)  # warm caches (not timed)
            base_ssh = [parallel(ssh) for _ in range(rounds)]
            base_imports = [parallel(imports) for _ in range(rounds)]
            ready = []
            for i in range(rounds):
                ready.append(one_round(client, i))
                print(f"  round {i + 1}: {ready[-1]:.2f} s", flush=True)
    med = statistics.median(ready)
    results.update({
        "pool_ready_s": ready, "pool_ready_median_s": med, "pool_ready_best_s": min(ready),
        "ssh_true_parallel_s": base_ssh, "node_imports_parallel_s": base_imports,
        "target_met": med <= TARGET_S, "python": sys.version.split()[0]})
    table(f"{NODES}-node testbed pool: Pool - Add -> every node idle ({rounds} rounds)",
          ["", "best s", "median s"],
          [[f"hpcbatch pool of {NODES} nodes", min(ready), med],
           [f"baseline: ssh host true, {NODES} hosts in parallel", min(base_ssh),
            statistics.median(base_ssh)],
           [f"baseline: node process imports, {NODES} at once", min(base_imports),
            statistics.median(base_imports)]])
    print(f"target: median <= {TARGET_S:g} s -> {verdict(results['target_met'])} ({med:.2f} s)")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
