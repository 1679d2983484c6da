"""``hpcbatch quickstart``: the main job on the embedded default.

Starts a service in this process (SQLite, local storage) with three local
compute nodes, creates a pool, runs a job of tasks that each count the primes
in one slice of a range, then an mpi4py program as a multi-instance task over
all three nodes; prints summary tables (which rank ran on which node) and where
the outputs are, and exits 0 when everything succeeded.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hpcbatch.client.local import LocalBatch
from hpcbatch.client.sdk import BatchClient

SLICES = 12
RANGE_END = 240_000

PRIME_COUNT = (
    "import os, sys\n"
    "lo, hi = int(sys.argv[1]), int(sys.argv[2])\n"
    "sieve = bytearray([1]) * hi\n"
    "sieve[:2] = b'\\x00\\x00'\n"
    "for i in range(2, int(hi ** 0.5) + 1):\n"
    "    if sieve[i]: sieve[i*i::i] = bytearray(len(range(i*i, hi, i)))\n"
    "print(sum(sieve[lo:hi]), os.environ['AZ_BATCH_NODE_ID'])\n"
)


def main(nodes: int = 3, state_dir: Path | None = None, console: Console | None = None) -> int:
    """Run the quickstart job; return 0 when every task succeeded, else 1.

    Parameters
    ----------
    nodes
        Local compute nodes to start.
    state_dir
        Where the service keeps its state and the nodes their files; default a
        new folder under the system temp dir, kept after the run.
    """
    console = console or Console()
    state_dir = state_dir or Path(tempfile.mkdtemp(prefix="hpcbatch-quickstart-"))
    step = max(1, RANGE_END // SLICES)
    t0 = time.monotonic()
    with LocalBatch(nodes=nodes, state_dir=state_dir) as client:
        with console.status(f"starting a pool of {nodes} local nodes"):
            client.create_pool({"id": "quickstart", "vmSize": "local",
                                "targetDedicatedNodes": nodes,
                                "enableInterNodeCommunication": True})
            ready = client.wait_for_pool("quickstart", timeout_s=180)
        bad = [n for n in ready if n.state != "idle"]
        if bad:
            for n in bad:
                msg = n.errors[0].message if n.errors else "no error reported"
                console.print(f"[red]node {n.id} is {n.state}: {msg}")
            return 1
        console.print(f"pool [bold]quickstart[/]: {len(ready)} nodes idle "
                      f"({time.monotonic() - t0:.1f} s)")
        client.create_job({"id": "primes", "poolInfo": {"poolId": "quickstart"}})
        client.create_tasks("primes", [
            {"id": f"slice-{i:02d}",
             "commandLine": f"{sys.executable} -c \"{PRIME_COUNT}\" {i * step} {(i + 1) * step}"}
            for i in range(SLICES)
        ])
        with console.status("running 12 tasks"):
            counts = client.wait_for_tasks("primes", timeout_s=600)
        table = Table(title="job primes")
        for col in ("task", "node", "state", "exit code", "seconds", "stdout.txt"):
            table.add_column(col)
        total = 0
        for task in client.list_tasks("primes"):
            info = task.execution_info
            out = client.download_task_file("primes", task.id, "stdout.txt").decode().strip()
            if info and info.exit_code == 0 and out:
                total += int(out.split()[0])
            secs = ((info.end_time - info.start_time).total_seconds()
                    if info and info.end_time and info.start_time else 0)
            table.add_row(task.id, task.node_info.node_id if task.node_info else "-",
                          task.state, str(info.exit_code if info else "-"), f"{secs:.2f}", out)
        console.print(table)
        console.print(f"primes below {SLICES * step}: [bold]{total}[/] "
                      f"({counts['succeeded']} succeeded, {counts['failed']} failed)")
        console.print(f"task outputs: {state_dir}/nodes/<node>/workitems/primes/job-1/<task>/"
                      "stdout.txt")
        mpi_ok = _run_mpi(client, console, nodes)
        client.delete_pool("quickstart")
    console.print(f"done in {time.monotonic() - t0:.1f} s; state kept in {state_dir}")
    return 0 if counts["failed"] == 0 and mpi_ok else 1


def _run_mpi(client: BatchClient, console: Console, nodes: int) -> bool:
    """Run an mpi4py program as a multi-instance task over every node; print rank placement."""
    command = (f"/bin/sh -c 'mpiexec -hosts $AZ_BATCH_HOST_LIST -n {nodes} "
               f"{shlex.quote(sys.executable)} -m hpcbatch.mpihello'")
    client.create_job({"id": "mpi", "poolInfo": {"poolId": "quickstart"}})
    client.create_task("mpi", {
        "id": "hello", "commandLine": command,
        "multiInstanceSettings": {"numberOfInstances": nodes,
                                  "coordinationCommandLine": "/bin/true"}})
    with console.status(f"running an MPI task on {nodes} nodes"):
        client.wait_for_tasks("mpi", timeout_s=300)
    task = client.get_task("mpi", "hello")
    info = task.execution_info
    if not info or info.exit_code != 0:
        msg = info.failure_info.message if info and info.failure_info else "no failure info"
        err = client.download_task_file("mpi", "hello", "stderr.txt").decode()[-1000:]
        console.print(f"[red]MPI task failed (exit code {info.exit_code if info else '-'}): "
                      f"{msg}\n{err}")
        return False
    node_of = {n.ip_address: n.id for n in client.list_nodes("quickstart")}
    ranks = [json.loads(line) for line in
             client.download_task_file("mpi", "hello", "stdout.txt").decode().splitlines()
             if line.startswith("{")]
    table = Table(title="multi-instance task mpi/hello (mpiexec -hosts $AZ_BATCH_HOST_LIST)")
    for col in ("rank", "node", "address", "allreduce(rank+1)"):
        table.add_column(col)
    for r in sorted(ranks, key=lambda r: r["rank"]):
        table.add_row(str(r["rank"]), node_of.get(r["address"], "?"), r["address"], str(r["sum"]))
    console.print(table)
    expected = nodes * (nodes + 1) // 2
    return len(ranks) == nodes and all(r["sum"] == expected for r in ranks)


if __name__ == "__main__":
    raise SystemExit(main())
