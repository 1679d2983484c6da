"""The node agent alone: CPU per ``/bin/true`` run, without Dask, the service or SSH.

N runs (2,000; ``--quick`` 300) of ``/bin/true`` go through
:meth:`hpcbatch.execution.agent.NodeAgent.enqueue` on one event loop in this
process, ``--slots`` (2) in flight, as a node's Dask worker would start them:
the task directory and its files, the process, its ``$TaskLog`` saved to local
storage (hard links, as the service's default storage gives), the outcome
built. A new run is enqueued as soon as one reports, so the agent is never
idle. The node root is first in ``TMPDIR``'s file system (where the testbed's
node roots are) and then in ``/dev/shm`` (tmpfs), when it exists.

Figures per run: the agent's user and system CPU, its children's CPU (the
``/bin/true`` processes and the agent's watchdog), the total, and runs per
second. Baseline in the same run: ``subprocess.run(["/bin/true"])`` from one
loop, CPU of parent and child per run (``bench_dispatch.raw_spawn_cpu_ms``):
what running the task costs with no agent at all.

What this leaves out of ``bench_dispatch.py``'s per-task CPU: the Dask comms
(runs in, outcomes out, TLS), the service, the scheduler. Issue 14 asks for
1.3 CPU ms per task over all of them.

The file system matters more than the agent on this VM: its root file system
is ext4 without a journal, where each new inode skips the inodes deleted in the
last one to five minutes (``recently_deleted`` in the kernel's inode
allocator; ``perf record -g`` shows it). Within minutes of deleting a few
thousand task directories (this benchmark's own clean-up, a pool's, another
benchmark's), a run's directories and files cost over 1 ms of system CPU
there instead of about 0.1 ms; on tmpfs they cost a few hundredths. Run the
benchmarks of task dispatch minutes apart, or read this one's tmpfs row.

``--profile`` prints the agent's 20 costliest functions (cProfile, on the
first file system).

    python benchmarks/bench_agent.py [--quick] [--slots 2] [--profile] [--json PATH]
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import parse_args, table, write_json
from bench_dispatch import raw_spawn, raw_spawn_cpu_ms

from hpcbatch.execution.agent import Launch, NodeAgent, Outcome
from hpcbatch.execution.environment import NodeIdentity
from hpcbatch.execution.transfer import StorageRef


class _CountingAgent(NodeAgent):
    """A node agent whose outcomes go to a callback instead of the outcome stream."""

    on_outcome: Any = None

    def _report(self, key: str, outcome: Outcome) -> None:  # the stream's seam
        self.on_outcome(key, outcome)


def run_agent(folder: Path, n: int, slots: int, profile: bool = False) -> dict[str, Any]:
    """Run n ``/bin/true`` launches through a node agent rooted in ``folder``."""
    storage = folder / "storage"
    storage.mkdir(parents=True)
    agent = _CountingAgent(
        NodeIdentity(node_id="node-1", pool_id="p", root_dir=str(folder / "node"),
                     account_name="acct", account_url="http://127.0.0.1"),
        base_env={b"PATH": b"/usr/bin:/bin"})
    ref = StorageRef(url=storage.as_uri(), options={})

    def launch(i: int) -> Launch:
        return Launch(key=f"job-1/t{i}/0", task_dir=f"workitems/job-1/job-1/t{i}",
                      command_line="/bin/true", job_id="job-1", task_id=f"t{i}",
                      persist_logs=True, storage=ref)

    failed: list[str] = []

    async def go() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        state = {"next": slots, "ended": 0}

        def ended(key: str, outcome: Outcome) -> None:
            if outcome.exit_code != 0:
                failed.append(f"{key}: {outcome.failure_info}")
            state["ended"] += 1
            if state["next"] < n:
                loop.call_soon(agent.enqueue, [launch(state["next"])])
                state["next"] += 1
            if state["ended"] == n:
                done.set_result(None)

        agent.on_outcome = ended
        agent.enqueue([launch(i) for i in range(min(slots, n))])
        await done

    me0, kids0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    if profile:
        prof = cProfile.Profile()
        prof.runcall(asyncio.run, go())
    else:
        asyncio.run(go())
    wall = time.perf_counter() - t0
    me1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    agent.processes.warden.stop()
    if failed:
        raise RuntimeError(f"{len(failed)} runs failed, first: {failed[0]}")
    r = {"runs": n, "slots": slots, "wall_s": wall, "runs_per_s": n / wall,
         "agent_user_ms": (me1.ru_utime - me0.ru_utime) / n * 1e3,
         "agent_system_ms": (me1.ru_stime - me0.ru_stime) / n * 1e3,
         "children_ms": (kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime)
         / n * 1e3}
    r["total_ms"] = r["agent_user_ms"] + r["agent_system_ms"] + r["children_ms"]
    if profile:
        print(f"cProfile of the agent in {folder} (cProfile slows it; figures above are without)")
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    return r


def main() -> int:
    def extra(p: Any) -> None:
        p.add_argument("--slots", type=int, default=2, help="runs in flight (default 2)")
        p.add_argument("--profile", action="store_true", help="cProfile the agent too")

    args = parse_args("bench_agent", __doc__.splitlines()[0], extra)
    n = 300 if args.quick else 2000
    raw_spawn(50, 1)  # warm-up
    results: dict[str, Any] = {"benchmark": "agent", "runs": n, "slots": args.slots,
                               "raw_spawn_cpu_ms": raw_spawn_cpu_ms(n), "file_systems": {}}
    places: list[tuple[str, str | None]] = [("TMPDIR: " + tempfile.gettempdir(), None)]
    if Path("/dev/shm").is_dir():
        places.append(("tmpfs: /dev/shm", "/dev/shm"))
    for label, where in places:
        with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-agent-", dir=where) as tmp:
            run_agent(Path(tmp) / "warm", 50, args.slots)  # imports, caches, the watchdog
            results["file_systems"][label] = run_agent(Path(tmp) / "timed", n, args.slots)
            if args.profile and where is None:
                run_agent(Path(tmp) / "profiled", n, args.slots, profile=True)
    raw = results["raw_spawn_cpu_ms"]
    rows = [(label, f"{r['runs_per_s']:,.0f}", f"{r['agent_user_ms']:.3f}",
             f"{r['agent_system_ms']:.3f}", f"{r['children_ms']:.3f}", f"{r['total_ms']:.3f}",
             f"{r['total_ms'] - raw:.3f}")
            for label, r in results["file_systems"].items()]
    rows.append(("baseline: subprocess.run, one loop", "", "", "", "", f"{raw:.3f}", ""))
    table(f"Node agent alone: {n} /bin/true runs, {args.slots} in flight (CPU ms per run; "
          f"load average {os.getloadavg()[0]:.1f})",
          ["node root", "runs/s", "agent user", "agent sys", "children", "total",
           "beyond raw spawn"], rows)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
