"""Multi-instance (MPI) tasks on a 4-node SSH testbed pool vs bare ``mpiexec`` on the same hosts.

Setup: a testbed of 4 sshd hosts (127.0.8.1-4), added to a service; a pool of
4 nodes (``vmSize`` ``testbed``, ``enableInterNodeCommunication``).

1. **mpi4py hello, 4 ranks on 4 nodes.** Through hpcbatch: wall time from
   ``create_task`` of a task with ``numberOfInstances`` 4 and command line
   ``/bin/sh -c 'mpiexec -hosts $AZ_BATCH_HOST_LIST -n 4 python -m hpcbatch.mpihello'``
   until ``get_task`` (polled every 20 ms) says completed; without and with
   a coordination command ``/bin/true``. Baseline in the same run, interleaved
   round by round: the same command line run bare on the same hosts
   (``-hosts 127.0.8.1,...,127.0.8.4``), started like the agent starts it
   (shlex-split, no extra shell), with ``HYDRA_LAUNCHER_EXEC`` pointing at an
   ssh wrapper ``ssh -F <testbed>/ssh_config "$@"``. Median of N rounds
   (10; ``--quick`` 3). Target: hpcbatch adds at most 0.5 s.
   Breakdown from the task's own timestamps (the service runs in this
   process, so its clock is ours): REST add, dispatch (creation -> running),
   pre-app (running -> application process start: coordination phase and
   Dask submits), app (executionInfo start -> end), completion recording
   (app end -> completed), client observation (completed -> poll saw it).

2. **mpi4py ping-pong between ranks on two different nodes**
   (:mod:`hpcbatch.testing.mpipingpong`): 8-byte half round trip (us) and 1 MiB /
   16 MiB bandwidth (MB/s), as a 2-instance task vs bare ``mpiexec`` on the
   hosts that task ran on; R repeats each, interleaved (5; ``--quick`` 3).
   Target: equal within noise (ratio hpcbatch / bare). The client polls
   every 0.25 s here so that it does not compete with the ranks for the CPUs.
   All testbed nodes are one machine: MPICH sees one hostname and uses
   shared memory between the ranks, through hpcbatch and bare alike.

0. **``hpcbatch mpi run`` as a process vs bare ``mpiexec`` as a process**, from the
   shell's point of view: wall time from spawn to exit of
   ``hpcbatch mpi run --pool-id mpi --nodes 4 -- python -m hpcbatch.mpihello``
   (a new CLI process each round: start-up, job check, task add, long poll,
   stdout) against ``mpiexec -hosts <the 4 hosts> -n 4 python -m
   hpcbatch.mpihello`` (same ssh wrapper as 1.), interleaved round by round,
   median of N rounds (``--cli-runs``; default 10, ``--quick`` 5). Target:
   the CLI adds at most 0.3 s (srun on a warm allocation adds 0.1-0.3 s).
   ``--cli-only`` runs this part alone.

3. **Profile** (diagnosis, separate rounds): the service's Dask engine and
   dispatch pass are wrapped (in this process, no hpcbatch code changed) to
   timestamp every Dask submit and result, every out-of-band ``client.run``
   (``kill_tagged``), the scheduling pass that records the end; interleaved
   with bare runs that isolate the application phase (bare while a client
   polls ``get_task`` every 20 ms; bare through the pool's own ssh wrapper).
   Plus the primitives alone: Dask submit / ``client.run`` round trips,
   ``kill_tagged`` (a psutil scan of every process's environment), and the
   cost of one ``get_task`` poll.

    python benchmarks/bench_mpi.py [--quick] [--json PATH] [--runs N] [--repeats R]
                                   [--cli-runs N] [--cli-only]
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shlex
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import psutil
from _common import REPO, node_pids, parse_args, service, stats, table, verdict, write_json
from bench_cli import hpcbatch_argv

from hpcbatch.api.server import ServiceThread
from hpcbatch.client.sdk import BatchClient
from hpcbatch.execution import agent
from hpcbatch.testing import testbed

NODES = 4
BASE_ADDRESS = "127.0.8.1"
POLL_S = 0.02
PINGPONG_POLL_S = 0.25
TARGET_ADDED_S = 0.5
TARGET_CLI_ADDED_S = 0.3
COORDINATION = "/bin/true"
HELLO = "/bin/sh -c 'mpiexec -hosts {hosts} -n {n} python -m hpcbatch.mpihello'"
PINGPONG = "/bin/sh -c 'mpiexec -hosts {hosts} -n 2 python -m hpcbatch.testing.mpipingpong --iterations {it}'"
TASK_HOSTS = "$AZ_BATCH_HOST_LIST"
RUN_TIMEOUT_S = 120.0


# ---------------------------------------------------------------- small helpers

def med(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def run_bare(command: str, env: dict[str, str], cwd: Path) -> tuple[float, str]:
    """Run a command line as the agent does (shlex-split, no extra shell); return (s, stdout).

    Raises
    ------
    RuntimeError
        Non-zero exit, or no exit within RUN_TIMEOUT_S (the process tree is killed).
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(shlex.split(command), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        agent.kill_process_tree(proc.pid)
        out, err = proc.communicate()
        raise RuntimeError(f"bare run hung (> {RUN_TIMEOUT_S} s): {command}\n{err[-2000:]}") from None
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"bare run failed ({proc.returncode}): {command}\n{err[-2000:]}")
    return wall, out


def retried(fn: Callable[[int], Any], what: str, failures: list[dict[str, Any]]) -> Any:
    """Call ``fn(attempt)`` until it succeeds (3 attempts); record each failure.

    The repository may be edited while the benchmark runs (a rank importing a
    half-written module fails); a failed sample is retried, not dropped.
    """
    for attempt in range(3):
        try:
            return fn(attempt)
        except (RuntimeError, TimeoutError, AssertionError) as exc:
            failures.append({"what": what, "attempt": attempt, "error": str(exc)[-2000:]})
            print(f"  ! {what} failed (attempt {attempt + 1}): {str(exc).splitlines()[0]}",
                  flush=True)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def run_task(client: BatchClient, job: str, task_id: str, command: str, instances: int,
             coordination: str | None, poll_s: float) -> dict[str, Any]:
    """Add a multi-instance task, poll until completed; return wall time and its timestamps."""
    mis: dict[str, Any] = {"numberOfInstances": instances}
    if coordination:
        mis["coordinationCommandLine"] = coordination
    body = {"id": task_id, "commandLine": command, "multiInstanceSettings": mis}
    t0_wall = time.time()
    t0 = time.perf_counter()
    client.create_task(job, body)
    polls = 0
    while True:
        task = client.get_task(job, task_id)
        polls += 1
        if task.state == "completed":
            break
        if time.perf_counter() - t0 > RUN_TIMEOUT_S:
            client.terminate_task(job, task_id)
            raise TimeoutError(f"{job}/{task_id} not completed after {RUN_TIMEOUT_S} s")
        time.sleep(poll_s)
    wall = time.perf_counter() - t0
    info = task.execution_info
    assert info is not None
    if info.exit_code != 0:
        err = client.download_task_file(job, task_id, "stderr.txt").decode(errors="replace")
        raise RuntimeError(f"{job}/{task_id} failed: {info.failure_info}\n{err[-2000:]}")
    ts = {"client_start": t0_wall, "client_seen": t0_wall + wall,
          "created": task.creation_time.timestamp(),
          "running": task.previous_state_transition_time.timestamp(),
          "app_start": info.start_time.timestamp(), "app_end": info.end_time.timestamp(),
          "completed": task.state_transition_time.timestamp()}
    return {"wall_s": wall, "polls": polls, "ts": ts, "task": task}


BREAKDOWN = [  # (name, from, to)
    ("REST add (client -> creationTime)", "client_start", "created"),
    ("dispatch (creation -> running)", "created", "running"),
    ("pre-app: coordination + Dask submits (running -> app start)", "running", "app_start"),
    ("app: mpiexec (executionInfo start -> end)", "app_start", "app_end"),
    ("completion recording (app end -> completed)", "app_end", "completed"),
    ("client observation (completed -> poll saw it)", "completed", "client_seen"),
]


def breakdown(ts: dict[str, float]) -> dict[str, float]:
    return {name: ts[b] - ts[a] for name, a, b in BREAKDOWN}


def hello_ranks(stdout: str, n: int) -> list[str]:
    """Check the mpihello output (n ranks, n distinct nodes); return rank addresses."""
    ranks = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in ranks) == list(range(n)), stdout
    assert all(r["sum"] == n * (n + 1) // 2 for r in ranks), stdout
    addrs = [r["address"] for r in sorted(ranks, key=lambda r: r["rank"])]
    assert len(set(addrs)) == n, f"ranks not on {n} distinct nodes: {addrs}"
    return addrs


def pingpong_result(stdout: str) -> dict[str, Any]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("{"))
    out = json.loads(line)
    assert out["ranks"]["0"] != out["ranks"]["1"], f"ranks 0 and 1 on one node: {out['ranks']}"
    return out


def task_stdout(client: BatchClient, job: str, task_id: str) -> str:
    return client.download_task_file(job, task_id, "stdout.txt").decode()


# ---------------------------------------------------------------- profiling

class Probe:
    """Timestamps the service's node calls and scheduling passes (wraps instance attributes).

    Works with each way the service has had of starting a run on a node:
    ``engine.submit`` (a Dask task whose result is fetched), ``engine.submit``
    + ``engine.outcome`` (outcome pushed as a Dask event), ``engine.launch``
    (runs sent with ``client.run``, outcomes pushed as events; today: runs and
    outcomes exchanged with each worker's ``hpcbatch_exchange`` handler). Everything runs
    in this process: the service loop thread appends, the main thread reads
    after the task has completed.
    """

    def __init__(self, thread: ServiceThread) -> None:
        self.svc = thread.runtime.service
        self.engine = thread.runtime.engine
        assert self.svc is not None and self.engine is not None
        self.submits: dict[str, dict[str, Any]] = {}
        self.run_ons: list[tuple[str, Any, float, float]] = []
        self.records: list[tuple[float, float, list[str]]] = []
        self.launches: dict[str, tuple[float, str]] = {}
        self._saved: dict[tuple[Any, str], Any] = {}

    @staticmethod
    def _got(entry: dict[str, Any], out: Any) -> None:
        entry.setdefault("result", time.time())
        if isinstance(out, agent.Outcome):
            entry["start"] = out.start_time.timestamp()
            entry["end"] = out.end_time.timestamp()

    def install(self) -> None:
        engine, svc, probe = self.engine, self.svc, self
        call, record, launch = engine.call, svc.dispatcher._record_ended, svc.dispatcher._launch
        wraps: list[tuple[Any, str, Any]] = []
        has_outcome = hasattr(engine, "outcome")

        submit = getattr(engine, "submit", None)  # engines that ran runs as Dask tasks
        watching: set[asyncio.Future[None]] = set()  # asyncio holds tasks weakly: keep them to the end

        def p_submit(fn: Callable[..., Any], *args: Any, worker: str, key: str) -> Any:
            t = time.time()
            assert submit is not None
            fut = submit(fn, *args, worker=worker, key=key)
            entry = probe.submits[key] = {"submit": t}
            if not has_outcome:  # the service awaits the Dask future itself
                async def watch() -> None:
                    try:
                        out = await fut
                    except BaseException:  # noqa: BLE001 - only timing
                        out = None
                    probe._got(entry, out)

                watcher = asyncio.ensure_future(watch())
                watching.add(watcher)
                watcher.add_done_callback(watching.discard)
            return fut

        if submit is not None:
            wraps.append((engine, "submit", p_submit))
        if has_outcome:
            outcome = engine.outcome

            async def p_outcome(future: Any) -> Any:
                out = await outcome(future)
                probe._got(probe.submits.setdefault(str(future.key), {}), out)
                return out

            wraps.append((engine, "outcome", p_outcome))
        if hasattr(engine, "launch"):
            elaunch = engine.launch

            async def p_elaunch(worker: str, launches: list[Any]) -> Any:
                t = time.time()
                entries = [probe.submits.setdefault(lc.key, {"submit": t}) for lc in launches]
                futures = await elaunch(worker, launches)
                for entry, fut in zip(entries, futures):
                    def done(f: Any, entry: dict[str, Any] = entry) -> None:
                        probe._got(entry, None if f.cancelled() or f.exception() else f.result())
                    if fut.done():
                        done(fut)
                    else:
                        fut.add_done_callback(done)
                return futures

            wraps.append((engine, "launch", p_elaunch))

        async def p_call(worker: str, op: str, **kw: Any) -> Any:
            t = time.time()
            try:
                return await call(worker, op, **kw)
            finally:
                probe.run_ons.append((op, kw.get("key"), t, time.time()))

        def p_record(*args: Any) -> Any:
            pending = [e.run.key for e in svc.dispatcher._ended]
            t = time.time()
            out = record(*args)
            if pending:
                probe.records.append((t, time.time(), pending))
            return out

        def p_launch(job: Any, row: Any, nodes_: Any, *rest: Any) -> Any:
            t = time.time()
            out = launch(job, row, nodes_, *rest)
            key = svc.runs.by_task.get((job["key"], row["key"]), "?")
            probe.launches[f"{job['id']}/{row['id']}"] = (t, key)
            return out

        wraps += [(engine, "call", p_call), (svc.dispatcher, "_record_ended", p_record),
                  (svc.dispatcher, "_launch", p_launch)]
        for obj, name, fn in wraps:
            self._saved[(obj, name)] = obj.__dict__.get(name)
            setattr(obj, name, fn)

    def uninstall(self) -> None:
        for (obj, name), old in self._saved.items():
            if old is None:
                delattr(obj, name)
            else:
                setattr(obj, name, old)

    def timeline(self, job: str, task_id: str, ts: dict[str, float]) -> dict[str, float]:
        """Service-side segments of one run (seconds), in order; they sum to the wall time."""
        t_launch, key = self.launches[f"{job}/{task_id}"]
        app = self.submits[key]
        coord = [v for k, v in self.submits.items() if k.startswith(key + ".")]
        kills = [r for r in self.run_ons if r[0] == "kill_tagged"
                 and str(r[1]).split(".")[0] == key]
        rec = next(r for r in self.records if key in r[2])
        seg: dict[str, float] = {
            "REST add (client -> task stored)": ts["created"] - ts["client_start"],
            "dispatch pass (stored -> run registered, _launch)": t_launch - ts["created"],
        }
        prev = t_launch
        if coord:
            seg["coordination: sent to nodes -> last instance process started"] = (
                max(c["start"] for c in coord) - t_launch)
            seg["coordination: last start -> last /bin/true exited"] = (
                max(c["end"] for c in coord) - max(c["start"] for c in coord))
            seg["coordination: last exit -> all results at the service"] = (
                max(c["result"] for c in coord) - max(c["end"] for c in coord))
            prev = max(c["result"] for c in coord)
        seg["app: sent to node -> mpiexec process started"] = app["start"] - prev
        seg["app: mpiexec runs"] = app["end"] - app["start"]
        seg["app: process exit -> result at the service"] = app["result"] - app["end"]
        kill_end = max((r[3] for r in kills), default=app["result"])
        if kills:  # only with a coordination command: its daemons are ended
            seg[f"kill_tagged x{len(kills)} (hpcbatch_call; psutil scan of every process)"] = (
                kill_end - app["result"])
        seg["run ended -> recording pass starts (kick, pass coalescing)"] = rec[0] - kill_end
        seg["recording pass (SQLite transaction)"] = rec[1] - rec[0]
        seg["client observation (recorded -> poll saw it)"] = ts["client_seen"] - rec[1]
        return seg


async def primitives(thread: ServiceThread, reps: int) -> dict[str, Any]:
    """Round trips of the Dask primitives a gang run uses, measured alone on the service loop."""
    engine = thread.runtime.engine
    assert engine is not None
    workers = list((await engine.workers()).values())
    tag = f"bench-{os.getpid()}-{time.time_ns()}"
    counter = itertools.count()
    out: dict[str, list[float]] = {k: [] for k in (
        "service_launch_run_task_true_s", "node_call_noop_s",
        "node_call_kill_tagged_s", "kill_tagged_x5_concurrent_s")}
    for _ in range(reps):
        i = next(counter)
        launch = agent.Launch(key=f"{tag}-true-{i}", task_dir=f"workitems/bench-floor/job-1/t{i}",
                              command_line="/bin/true", job_id="bench-floor", task_id=f"t{i}")
        t = time.perf_counter()
        if hasattr(engine, "run_launch"):
            await engine.run_launch(workers[0], launch)
        else:
            await engine.submit(agent.run_task, launch, worker=workers[0], key=launch.key)
        out["service_launch_run_task_true_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        await engine.call(workers[0], "node_info")
        out["node_call_noop_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        await engine.kill_tagged(workers[0], f"{tag}-none")
        out["node_call_kill_tagged_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        await asyncio.gather(*(engine.kill_tagged(w, f"{tag}-none")
                               for w in [workers[0], *workers]))
        out["kill_tagged_x5_concurrent_s"].append(time.perf_counter() - t)
    return out


def local_costs(client: BatchClient, job: str, task_id: str, reps: int) -> dict[str, Any]:
    """kill_tagged's scan in this process, and the cost of one get_task poll."""
    scan = []
    for _ in range(reps):
        t = time.perf_counter()
        agent.kill_tagged("bench-none")
        scan.append(time.perf_counter() - t)
    lat, cpu0 = [], time.process_time()
    for _ in range(reps * 5):
        t = time.perf_counter()
        client.get_task(job, task_id)
        lat.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu0) / (reps * 5)
    return {"processes_on_machine": len(psutil.pids()), "kill_tagged_local_scan_s": scan,
            "get_task_latency_s": lat, "get_task_cpu_s_client_plus_service": cpu,
            "get_task_cpu_share_at_20ms_poll": cpu / POLL_S}


class Poller:
    """Poll get_task every 20 ms from a thread (the client's load during a hpcbatch run)."""

    def __init__(self, make_client: Callable[[], BatchClient], job: str, task_id: str) -> None:
        self.client = make_client()
        self.job, self.task_id = job, task_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.client.get_task(self.job, self.task_id)
            time.sleep(POLL_S)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.client.close()


class InfraCPU:
    """CPU seconds used by the service's own processes (not the MPI ranks) during a run.

    ``client+service``: this process (REST client polling and the service's
    threads); ``scheduler``: the Dask scheduler; ``workers``: the 4 node
    processes (Dask workers and their agent threads).
    """

    def __init__(self, thread: ServiceThread, testbed_dir: Path) -> None:
        engine = thread.runtime.engine
        assert engine is not None and engine.proc is not None
        self.groups: dict[str, list[psutil.Process]] = {
            "client+service": [psutil.Process()],
            "scheduler": [psutil.Process(engine.proc.pid)],
            "workers": [psutil.Process(pid) for pid in node_pids(testbed_dir).values()],
        }

    def snapshot(self) -> dict[str, float]:
        out = {}
        for name, procs in self.groups.items():
            total = 0.0
            for p in procs:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            out[name] = total
        return out

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        d = {k: after[k] - before[k] for k in before}
        d["total"] = sum(d.values())
        return d


def via_agent(thread: ServiceThread, worker: str, command: str, hydra_exec: str,
              i: int) -> dict[str, Any]:
    """Run a command line through agent.run_task on one worker, as the service starts a run.

    No REST, no store, no scheduling pass, no client polling: the main thread
    blocks on the outcome.
    """
    engine = thread.runtime.engine
    assert engine is not None
    launch = agent.Launch(key=f"bench-direct-{os.getpid()}-{i}",
                          task_dir=f"workitems/bench-direct/job-1/d{i}", command_line=command,
                          job_id="bench-direct", task_id=f"d{i}",
                          extra_env={"HYDRA_LAUNCHER_EXEC": hydra_exec})

    async def go() -> tuple[float, agent.Outcome]:
        t = time.perf_counter()
        if hasattr(engine, "run_launch"):  # the service's own way of starting a run
            out = await engine.run_launch(worker, launch)
        else:
            out = await engine.submit(agent.run_task, launch, worker=worker, key=launch.key)
        return time.perf_counter() - t, out

    wall, out = thread.call(go(), RUN_TIMEOUT_S)
    if out.exit_code != 0:
        raise RuntimeError(f"direct run failed: {out.failure_info}")
    return {"wall_s": wall, "app_s": (out.end_time - out.start_time).total_seconds(),
            "stdout": Path(out.task_root_dir, "stdout.txt").read_text()}


# ---------------------------------------------------------------- the benchmark

def code_under_test(thread: ServiceThread) -> dict[str, Any]:
    """Which hpcbatch was measured: git state, and how the loaded service starts runs."""
    import inspect

    root = Path(__file__).resolve().parent.parent

    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], cwd=root, check=False, capture_output=True, text=True,
                                  timeout=30).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    engine, svc = thread.runtime.engine, thread.runtime.service
    try:
        loop_src = inspect.getsource(type(svc.dispatcher).loop)
    except (OSError, TypeError, AttributeError):
        loop_src = ""
    sleeps = [ln.strip() for ln in loop_src.splitlines() if "sleep(" in ln]
    path = ("engine.post/flush: runs and outcomes exchanged with each worker's "
            "hpcbatch_exchange handler (long poll), no scheduler on the path"
            if hasattr(engine, "post") else
            "engine.launch: runs sent with client.run, outcomes pushed as Dask events"
            if hasattr(engine, "launch") else
            "engine.submit + engine.outcome: Dask task, outcome pushed as a Dask event"
            if hasattr(engine, "outcome") else "engine.submit: Dask task, result fetched")
    return {"git_head": git("rev-parse", "--short", "HEAD"),
            "git_head_subject": git("log", "-1", "--format=%s"),
            "uncommitted_hpcbatch_files": [ln[3:] for ln in git("status", "--porcelain",
                                                                "hpcbatch").splitlines()],
            "run_launch_path": path, "dispatch_loop_sleeps": sleeps}


def cli_vs_bare(state_dir: Path, bare_hello: str, bare_env: dict[str, str], scratch: Path,
                runs: int, failures: list[dict[str, Any]]) -> dict[str, Any]:
    """Part 0: ``hpcbatch mpi run`` and bare ``mpiexec``, each as a new process, interleaved."""
    argv = [*hpcbatch_argv(), "mpi", "run", "--pool-id", "mpi", "--nodes", str(NODES), "--",
            "python", "-m", "hpcbatch.mpihello"]
    # As an installed package runs (bytecode cached); this checkout's code.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AZURE_BATCH_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(HPCBATCH_STATE_DIR=str(state_dir), PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))

    def cli(attempt: int) -> float:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, cwd=scratch, stdin=subprocess.DEVNULL,
                              check=False, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"hpcbatch mpi run exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        hello_ranks(proc.stdout, NODES)
        return wall

    def bare(attempt: int) -> float:
        wall, out = run_bare(bare_hello, bare_env, scratch)
        hello_ranks(out, NODES)
        return wall

    retried(cli, "cli warm-up", failures)  # creates the pool's job mpi-mpi (untimed)
    retried(bare, "bare warm-up", failures)
    samples: dict[str, list[float]] = {"bare": [], "cli": []}
    for r in range(runs):
        for variant in (["bare", "cli"] if r % 2 == 0 else ["cli", "bare"]):
            fn = bare if variant == "bare" else cli
            samples[variant].append(retried(fn, f"cli part {variant}", failures))
        print(f"  mpi run round {r + 1}/{runs}: bare {samples['bare'][-1]:.3f} s, "
              f"hpcbatch mpi run {samples['cli'][-1]:.3f} s", flush=True)
    out: dict[str, Any] = {"argv": argv, "bare_command": bare_hello,
                           **{v: stats(s_) for v, s_ in samples.items()}}
    out["added_s"] = out["cli"]["median_s"] - out["bare"]["median_s"]
    out["added_paired_median_s"] = med([a - b for a, b in zip(samples["cli"], samples["bare"])])
    out["target_added_s"] = TARGET_CLI_ADDED_S
    out["target_met"] = out["added_s"] <= TARGET_CLI_ADDED_S
    return out


def print_cli(c: dict[str, Any]) -> None:
    runs = len(c["cli"]["samples_s"])
    table(f"0. 4-node mpi4py hello as a process, spawn -> exit (median of {runs}, interleaved)",
          ["", "median s", "best s", "added s", "added s (paired)", "target"],
          [["bare mpiexec (baseline)", c["bare"]["median_s"], c["bare"]["best_s"], "", "", ""],
           ["hpcbatch mpi run", c["cli"]["median_s"], c["cli"]["best_s"], f"{c['added_s']:+.3f}",
            f"{c['added_paired_median_s']:+.3f}",
            f"{verdict(c['target_met'])} (<= {TARGET_CLI_ADDED_S} s)"]])
    print(f"target (hpcbatch mpi run): added <= {TARGET_CLI_ADDED_S} s -> "
          f"{verdict(c['target_met'])} ({c['added_s']:+.3f} s; paired "
          f"{c['added_paired_median_s']:+.3f} s)")


def main() -> int:
    def extra(p: Any) -> None:
        p.add_argument("--runs", type=int, help="hello rounds (default 10; --quick 3)")
        p.add_argument("--repeats", type=int, help="ping-pong repeats (default 5; --quick 3)")
        p.add_argument("--iterations", type=int, help="ping-pong 8-byte round trips (20000; --quick 5000)")
        p.add_argument("--profile-runs", type=int, help="profile rounds (default 8; --quick 2)")
        p.add_argument("--cli-runs", type=int, help="CLI vs bare rounds (default 10; --quick 5)")
        p.add_argument("--cli-only", action="store_true",
                       help="run only part 0 (hpcbatch mpi run as a process vs bare mpiexec)")

    args = parse_args("bench_mpi", __doc__.splitlines()[0], extra)
    runs = args.runs or (3 if args.quick else 10)
    repeats = args.repeats or (3 if args.quick else 5)
    iterations = args.iterations or (5000 if args.quick else 20000)
    profile_runs = args.profile_runs if args.profile_runs is not None else (2 if args.quick else 8)
    cli_runs = args.cli_runs or (5 if args.quick else 10)
    results: dict[str, Any] = {"benchmark": "mpi", "nodes": NODES, "runs": runs,
                               "pingpong_repeats": repeats, "pingpong_iterations": iterations,
                               "poll_s": POLL_S, "target_added_s": TARGET_ADDED_S}

    with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-mpi-") as tmpdir:
        tmp = Path(tmpdir)
        scratch = tmp / "bare"
        scratch.mkdir()
        with testbed.up(NODES, tmp / "testbed", base_address=BASE_ADDRESS) as bed, \
                service(tmp / "state") as (client, thread):
            hosts = ",".join(h.address for h in bed.hosts)
            wrapper = tmp / "ssh-wrapper"
            wrapper.write_text(f"#!/bin/sh\nexec ssh -F {shlex.quote(str(bed.ssh_config_path))} \"$@\"\n")
            wrapper.chmod(0o755)
            bare_env = {**os.environ, "HYDRA_LAUNCHER_EXEC": str(wrapper)}
            client.add_hosts([h.model_dump(mode="json") for h in bed.hosts])
            client.create_pool({"id": "mpi", "vmSize": "testbed", "targetDedicatedNodes": NODES,
                                "enableInterNodeCommunication": True})
            t = time.perf_counter()
            nodes = client.wait_for_pool("mpi", timeout_s=180)
            results["pool_ready_s"] = time.perf_counter() - t
            assert [n.state for n in nodes] == ["idle"] * NODES, [(n.id, n.errors) for n in nodes]
            results["code_under_test"] = code_under_test(thread)
            print(f"code under test: {results['code_under_test']}", flush=True)
            for job in ("warm", "hello", "hello-coord", "pingpong", "profile"):
                client.create_job({"id": job, "poolInfo": {"poolId": "mpi"}})

            bare_hello = HELLO.format(hosts=hosts, n=NODES)
            task_hello = HELLO.format(hosts=TASK_HOSTS, n=NODES)
            print(f"bare:     {bare_hello}\nhpcbatch: {task_hello}\n"
                  f"          (numberOfInstances {NODES}; coordination none / {COORDINATION})",
                  flush=True)

            failures: list[dict[str, Any]] = []
            results["failures"] = failures

            def hello_bare(env: dict[str, str]) -> Callable[[int], dict[str, Any]]:
                def go(attempt: int) -> dict[str, Any]:
                    wall, out = run_bare(bare_hello, env, scratch)
                    hello_ranks(out, NODES)
                    return {"wall_s": wall}
                return go

            def hello_task(job: str, tid: str, coord: str | None,
                           poll_s: float = POLL_S) -> Callable[[int], dict[str, Any]]:
                def go(attempt: int) -> dict[str, Any]:
                    t = tid if attempt == 0 else f"{tid}-retry{attempt}"
                    res = run_task(client, job, t, task_hello, NODES, coord, poll_s)
                    hello_ranks(task_stdout(client, job, t), NODES)
                    res["task_id"] = t
                    return res
                return go

            # Warm-up, untimed: every path once (page cache, imports in the workers, ssh).
            retried(hello_bare(bare_env), "warm-up bare", failures)
            for i, coord in enumerate((None, COORDINATION)):
                res = retried(hello_task("warm", f"w{i}", coord), "warm-up task", failures)
            # The primary's task dir keeps the pool's ssh wrapper (profile: bare through it).
            ni = res["task"].node_info
            primary_dir = Path(bed.host(ni.node_id).root_dir, ni.task_root_directory)
            loadavg = {"start": list(os.getloadavg())}

            # ------------------------------------- 0. hpcbatch mpi run (a process) vs bare mpiexec
            results["cli"] = cli_vs_bare(tmp / "state", bare_hello, bare_env, scratch, cli_runs,
                                         failures)
            loadavg["after_cli"] = list(os.getloadavg())
            if args.cli_only:
                results["load_average_1_5_15"] = loadavg
                print_cli(results["cli"])
                write_json(args.json, results)
                return 0

            # ---------------------------------------------------- 1. hello, interleaved
            infra = InfraCPU(thread, tmp / "testbed")
            assert len(infra.groups["workers"]) == NODES, infra.groups
            cpu: dict[str, list[dict[str, float]]] = {"bare": [], "hpcbatch": [], "hpcbatch_coord": []}
            samples: dict[str, list[float]] = {"bare": [], "hpcbatch": [], "hpcbatch_coord": []}
            parts: dict[str, list[dict[str, float]]] = {"hpcbatch": [], "hpcbatch_coord": []}
            polls: dict[str, list[int]] = {"hpcbatch": [], "hpcbatch_coord": []}
            order = ["bare", "hpcbatch", "hpcbatch_coord"]
            for r in range(runs):
                for variant in order[r % 3:] + order[:r % 3]:  # rotate: no variant always first
                    before = infra.snapshot()
                    if variant == "bare":
                        wall = retried(hello_bare(bare_env), "hello bare", failures)["wall_s"]
                    else:
                        job = "hello" if variant == "hpcbatch" else "hello-coord"
                        coord = COORDINATION if variant == "hpcbatch_coord" else None
                        res = retried(hello_task(job, f"r{r:02d}", coord), f"hello {variant}",
                                      failures)
                        wall = res["wall_s"]
                        parts[variant].append(breakdown(res["ts"]))
                        polls[variant].append(res["polls"])
                    cpu[variant].append(InfraCPU.delta(before, infra.snapshot()))
                    samples[variant].append(wall)
                print(f"  hello round {r + 1}/{runs}: " + ", ".join(
                    f"{v} {samples[v][-1]:.3f} s" for v in order), flush=True)
            hello: dict[str, Any] = {v: stats(s) for v, s in samples.items()}
            for v, h in hello.items():
                h["infra_cpu_s_median"] = {k: med([c[k] for c in cpu[v]]) for k in cpu[v][0]}
            base = hello["bare"]["median_s"]
            for v in ("hpcbatch", "hpcbatch_coord"):
                hello[v]["added_s"] = hello[v]["median_s"] - base
                hello[v]["added_paired_median_s"] = med(
                    [a - b for a, b in zip(samples[v], samples["bare"])])
                hello[v]["polls_median"] = med(polls[v])
                hello[v]["breakdown_median_s"] = {
                    name: med([p[name] for p in parts[v]]) for name, _, _ in BREAKDOWN}
                hello[v]["breakdown_runs_s"] = parts[v]
                app = hello[v]["breakdown_median_s"][BREAKDOWN[3][0]]
                hello[v]["app_minus_bare_s"] = app - base
                hello[v]["outside_app_s"] = hello[v]["median_s"] - app
                hello[v]["target_met"] = hello[v]["added_s"] <= TARGET_ADDED_S
            loadavg["after_hello"] = list(os.getloadavg())
            results["hello"] = {"bare_command": bare_hello, "task_command": task_hello,
                                "coordination": COORDINATION, **hello}

            # ---------------------------------------------------- 2. ping-pong, interleaved
            task_pp = PINGPONG.format(hosts=TASK_HOSTS, it=iterations)
            pp: dict[str, list[dict[str, Any]]] = {"bare": [], "hpcbatch": []}
            pp_hosts: str | None = None

            def pp_task(tid: str) -> Callable[[int], dict[str, Any]]:
                def go(attempt: int) -> dict[str, Any]:
                    t = tid if attempt == 0 else f"{tid}-retry{attempt}"
                    res = run_task(client, "pingpong", t, task_pp, 2, None, PINGPONG_POLL_S)
                    out = pingpong_result(task_stdout(client, "pingpong", t))
                    out["wall_s"] = res["wall_s"]
                    return out
                return go

            def pp_bare(attempt: int) -> dict[str, Any]:
                assert pp_hosts is not None
                wall, stdout = run_bare(PINGPONG.format(hosts=pp_hosts, it=iterations),
                                        bare_env, scratch)
                out = pingpong_result(stdout)
                out["wall_s"] = wall
                return out

            warm = retried(pp_task("warm"), "ping-pong warm-up", failures)  # untimed
            pp_hosts = f"{warm['ranks']['0']},{warm['ranks']['1']}"
            retried(pp_bare, "ping-pong warm-up bare", failures)
            for r in range(repeats):
                for variant in (["bare", "hpcbatch"] if r % 2 else ["hpcbatch", "bare"]):
                    if variant == "hpcbatch":
                        out = retried(pp_task(f"p{r:02d}"), "ping-pong hpcbatch", failures)
                    else:
                        out = retried(pp_bare, "ping-pong bare", failures)
                    pp[variant].append(out)
                print(f"  ping-pong {r + 1}/{repeats}: " + ", ".join(
                    f"{v} {pp[v][-1]['latency']['half_round_trip_us']:.2f} us "
                    f"{pp[v][-1]['bandwidth'][-1]['MB_per_s']:.0f} MB/s" for v in ("bare", "hpcbatch")),
                    flush=True)

            def pp_metric(v: str) -> dict[str, list[float]]:
                """Per run: the median block and the best block of each figure."""
                m = {"latency 8 B, half round trip us": [
                        o["latency"]["half_round_trip_us"] for o in pp[v]],
                     "latency 8 B, half round trip us (best block)": [
                        o["latency"]["half_round_trip_us_best"] for o in pp[v]]}
                for k, b in enumerate(pp[v][0]["bandwidth"]):
                    m[f"bandwidth {b['size_bytes'] >> 20} MiB, MB/s"] = [
                        o["bandwidth"][k]["MB_per_s"] for o in pp[v]]
                    m[f"bandwidth {b['size_bytes'] >> 20} MiB, MB/s (best block)"] = [
                        o["bandwidth"][k]["MB_per_s_best"] for o in pp[v]]
                return m

            def spread(xs: list[float]) -> float:
                return max(xs) / min(xs) - 1

            metrics = {v: pp_metric(v) for v in pp}
            results["pingpong"] = {
                "bare_command": PINGPONG.format(hosts=pp_hosts, it=iterations),
                "task_command": task_pp, "hosts": pp_hosts, "client_poll_s": PINGPONG_POLL_S,
                "transport_note": "all testbed nodes share one kernel and hostname: MPICH "
                                  "uses shared memory between the ranks (both variants)",
                "runs": pp,
                "metrics": {name: {
                    **{v: {"median": med(metrics[v][name]), "samples": metrics[v][name],
                           "spread_max_over_min_minus_1": spread(metrics[v][name])}
                       for v in ("bare", "hpcbatch")},
                    "ratio_hpcbatch_over_bare": med(metrics["hpcbatch"][name])
                    / med(metrics["bare"][name]),
                } for name in metrics["bare"]},
            }

            loadavg["after_pingpong"] = list(os.getloadavg())

            # ---------------------------------------------------- 3. profile
            prim = thread.call(primitives(thread, 10 if args.quick else 20), 300)
            local = local_costs(client, "hello", "r00", 10 if args.quick else 20)
            def new_client() -> BatchClient:
                return BatchClient.from_environment(thread.runtime.state_dir)

            # Worker names are "{node id}@{incarnation}"; node IDs are the host names here.
            workers = {name.split("@")[0]: addr for name, addr in
                       thread.call(thread.runtime.engine.workers(), 60).items()}
            prof: dict[str, list[Any]] = {k: [] for k in (
                "bare", "bare_while_polling", "bare_pool_ssh_wrapper", "agent_via_dask",
                "hpcbatch", "hpcbatch_coord", "hpcbatch_poll_250ms")}
            prof_app: dict[str, list[float]] = {k: [] for k in prof}
            prof_cpu: dict[str, list[dict[str, float]]] = {k: [] for k in prof}
            timelines: dict[str, list[dict[str, float]]] = {
                "hpcbatch": [], "hpcbatch_coord": [], "hpcbatch_poll_250ms": []}
            probe = Probe(thread)
            probe.install()
            try:
                for r in range(profile_runs):
                    names = list(prof)
                    for variant in names[r % len(names):] + names[:r % len(names)]:
                        before = infra.snapshot()
                        if variant == "agent_via_dask":
                            def direct(attempt: int, r: int = r) -> dict[str, Any]:
                                d = via_agent(thread, workers[bed.hosts[0].name], bare_hello,
                                              str(wrapper), r * 10 + attempt)
                                hello_ranks(d["stdout"], NODES)
                                return d
                            d = retried(direct, "profile agent_via_dask", failures)
                            wall, app_s = d["wall_s"], d["app_s"]
                        elif variant.startswith("bare"):
                            env = bare_env
                            if variant == "bare_pool_ssh_wrapper":
                                env = {**os.environ,
                                       "HYDRA_LAUNCHER_EXEC": str(primary_dir / "ssh" / "ssh")}
                            if variant == "bare_while_polling":
                                with Poller(new_client, "hello", "r00"):
                                    wall = retried(hello_bare(env), f"profile {variant}",
                                                   failures)["wall_s"]
                            else:
                                wall = retried(hello_bare(env), f"profile {variant}",
                                               failures)["wall_s"]
                            app_s = wall
                        else:
                            coord = COORDINATION if variant == "hpcbatch_coord" else None
                            poll = PINGPONG_POLL_S if variant == "hpcbatch_poll_250ms" else POLL_S
                            res = retried(hello_task("profile", f"{variant}-{r:02d}", coord, poll),
                                          f"profile {variant}", failures)
                            wall = res["wall_s"]
                            app_s = res["ts"]["app_end"] - res["ts"]["app_start"]
                            timelines[variant].append(
                                probe.timeline("profile", res["task_id"], res["ts"]))
                        prof_cpu[variant].append(InfraCPU.delta(before, infra.snapshot()))
                        prof[variant].append(wall)
                        prof_app[variant].append(app_s)
                    print(f"  profile round {r + 1}/{profile_runs}: " + ", ".join(
                        f"{v} {s_[-1]:.3f} s" for v, s_ in prof.items() if s_), flush=True)
            finally:
                probe.uninstall()
            loadavg["after_profile"] = list(os.getloadavg())
            results["load_average_1_5_15"] = loadavg
            results["profile"] = {
                "wall_s": {v: stats(s) for v, s in prof.items() if s},
                "app_s": {v: stats(s) for v, s in prof_app.items() if s},
                "infra_cpu_s_median": {v: {k: med([c[k] for c in cs]) for k in cs[0]}
                                       for v, cs in prof_cpu.items() if cs},
                "timeline_median_s": {v: {k: med([t[k] for t in ts]) for k in ts[0]}
                                      for v, ts in timelines.items() if ts},
                "timeline_runs_s": timelines,
                "primitives_s": {k: stats(v) for k, v in prim.items()},
                "local": {**local, "kill_tagged_local_scan_s": stats(local["kill_tagged_local_scan_s"]),
                          "get_task_latency_s": stats(local["get_task_latency_s"])},
            }

    # ---------------------------------------------------------------- report
    print_cli(results["cli"])
    h = results["hello"]
    rows = [["bare mpiexec (baseline)", h["bare"]["median_s"], h["bare"]["best_s"], "", "", "",
             h["bare"]["infra_cpu_s_median"]["total"]]]
    for v, label in (("hpcbatch", "hpcbatch, no coordination"),
                     ("hpcbatch_coord", f"hpcbatch, coordination {COORDINATION}")):
        rows.append([label, h[v]["median_s"], h[v]["best_s"], f"{h[v]['added_s']:+.3f}",
                     f"{h[v]['added_paired_median_s']:+.3f}",
                     f"{verdict(h[v]['target_met'])} (<= {TARGET_ADDED_S} s)",
                     h[v]["infra_cpu_s_median"]["total"]])
    table(f"1. 4-node mpi4py hello, create_task -> completed (median of {runs}, interleaved)",
          ["", "median s", "best s", "added s", "added s (paired)", "target",
           "service CPU s"], rows)

    rows = []
    for name, _, _ in BREAKDOWN:
        rows.append([name, h["hpcbatch"]["breakdown_median_s"][name],
                     h["hpcbatch_coord"]["breakdown_median_s"][name],
                     h["bare"]["median_s"] if name == BREAKDOWN[3][0] else ""])
    rows.append(["wall (median)", h["hpcbatch"]["median_s"], h["hpcbatch_coord"]["median_s"],
                 h["bare"]["median_s"]])
    rows.append(["  of which outside the app", h["hpcbatch"]["outside_app_s"],
                 h["hpcbatch_coord"]["outside_app_s"], ""])
    rows.append(["  app inside hpcbatch minus bare mpiexec", f"{h['hpcbatch']['app_minus_bare_s']:+.3f}",
                 f"{h['hpcbatch_coord']['app_minus_bare_s']:+.3f}", ""])
    table("   where hpcbatch's time goes (medians of the task's timestamps, s)",
          ["segment", "no coordination", f"coordination {COORDINATION}", "bare mpiexec"], rows)

    p = results["pingpong"]
    rows = []
    for name, m in p["metrics"].items():
        fmt = (lambda x: f"{x:.2f}") if "latency" in name else (lambda x: f"{x:,.0f}")
        rows.append([name, fmt(m["bare"]["median"]), fmt(m["hpcbatch"]["median"]),
                     f"{m['ratio_hpcbatch_over_bare']:.3f}",
                     " ".join(fmt(x) for x in m["bare"]["samples"]),
                     " ".join(fmt(x) for x in m["hpcbatch"]["samples"])])
    table(f"2. mpi4py ping-pong rank 0 <-> rank 1 on {p['hosts']} ({iterations} x 8 B; "
          f"median of {repeats} runs, interleaved; ratio = hpcbatch / bare)",
          ["", "bare", "hpcbatch", "ratio", "bare runs", "hpcbatch runs"], rows)

    pr = results["profile"]
    tl = pr["timeline_median_s"]
    keys = list(dict.fromkeys(k for v in tl.values() for k in v))
    cols = ("hpcbatch", "hpcbatch_coord", "hpcbatch_poll_250ms")
    rows = [[k, *(tl.get(v, {}).get(k, "") for v in cols)] for k in keys]
    rows.append(["wall (median)", *(pr["wall_s"][v]["median_s"] for v in cols)])
    table(f"3. profile: service-side timeline (median of {profile_runs}, s)",
          ["segment", "no coordination", f"coordination {COORDINATION}",
           "no coordination, 0.25 s polling"], rows)
    labels = {"bare": "bare mpiexec", "bare_while_polling": "bare, while a client polls get_task/20 ms",
              "bare_pool_ssh_wrapper": "bare, through the pool's ssh wrapper",
              "agent_via_dask": "agent.run_task via Dask (no REST, no polling)",
              "hpcbatch": "hpcbatch task, no coordination",
              "hpcbatch_coord": f"hpcbatch task, coordination {COORDINATION}",
              "hpcbatch_poll_250ms": "hpcbatch task, no coordination, client polls every 0.25 s"}
    bare_app = pr["app_s"]["bare"]["median_s"]
    rows = []
    for v, s_ in pr["app_s"].items():
        c = pr["infra_cpu_s_median"][v]
        rows.append([labels[v], pr["wall_s"][v]["median_s"], s_["median_s"],
                     f"{s_['median_s'] - bare_app:+.3f}", c["client+service"], c["scheduler"],
                     c["workers"]])
    table(f"   app phase isolated (median of {profile_runs}, s): the mpiexec process's own time, "
          "and CPU s the service's processes used meanwhile",
          ["", "wall", "mpiexec", "vs bare", "CPU client+service", "CPU scheduler", "CPU workers"],
          rows)
    loc = pr["local"]
    rows = [[k.removesuffix("_s").replace("_", " "), v["median_s"] * 1e3]
            for k, v in pr["primitives_s"].items()]
    rows += [["kill_tagged scan in one process", loc["kill_tagged_local_scan_s"]["median_s"] * 1e3],
             ["get_task round trip", loc["get_task_latency_s"]["median_s"] * 1e3],
             ["get_task CPU (client + service)", loc["get_task_cpu_s_client_plus_service"] * 1e3]]
    table(f"   primitives alone (median ms; {loc['processes_on_machine']} processes on the machine; "
          f"20 ms polling = {loc['get_task_cpu_share_at_20ms_poll']:.0%} of a core)",
          ["", "ms"], rows)
    for v in ("hpcbatch", "hpcbatch_coord"):
        print(f"target ({v}): added <= {TARGET_ADDED_S} s -> {verdict(h[v]['target_met'])} "
              f"({h[v]['added_s']:+.3f} s; paired {h[v]['added_paired_median_s']:+.3f} s)")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
