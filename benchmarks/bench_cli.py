"""How fast the ``hpcbatch`` command line answers, as a process, against a small service.

Target: ``hpcbatch --version`` and ``hpcbatch task list --job-id J`` (a table of
5 tasks) each take <= 150 ms wall (median of N runs, each a new process).

Baseline in the same run: ``python -c pass`` with the same interpreter (the
floor every command pays). Also timed: ``hpcbatch job list``, ``hpcbatch
task list --job-id J -o json``, and ``task list`` with its stdout on a
pseudo-terminal ("(terminal)": the rich table a person sees; to a pipe, as
here otherwise and in scripts, a table prints as plain columns without
importing rich).

The service runs in a thread of this process (``_common.service``, a temporary
state dir); the commands find it as users do, through the state dir's
``service.json`` (``HPCBATCH_STATE_DIR``). Its job has 5 tasks on a pool with
no nodes, so they stay active. Each command runs once untimed first (warm
file cache), then N times; the runs of the commands are interleaved so that
a burst of load on the machine does not fall on one command only. One more
run of each with ``python -X importtime`` records which heavy packages
(``requests``, ``pydantic``, ``rich``, ``distributed`` ...) the command
imported, and the cumulative import time of the ``hpcbatch`` modules.

    python benchmarks/bench_cli.py [--quick] [--runs N] [--json PATH]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, parse_args, service, stats, table, verdict, write_json

TARGET_S = 0.150
JOB = "clijob"
TASKS = 5
HEAVY = ("requests", "urllib3", "pydantic", "pydantic_core", "rich", "psutil", "distributed",
         "dask", "aiohttp", "sqlalchemy", "paramiko", "fabric", "yaml", "fsspec")
"""Top-level packages whose import a command should not pay for unless it needs them."""


def hpcbatch_argv() -> list[str]:
    """The ``hpcbatch`` console script next to this interpreter, else its entry point by ``-c``."""
    script = Path(sys.executable).with_name("hpcbatch")
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", ("import sys; from hpcbatch.client.cli import main; "
                                   "sys.argv[0] = 'hpcbatch'; sys.exit(main())")]


def commands() -> dict[str, list[str]]:
    hb = hpcbatch_argv()
    return {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "hpcbatch --version": [*hb, "--version"],
        "hpcbatch job list": [*hb, "job", "list"],
        f"hpcbatch task list --job-id {JOB}": [*hb, "task", "list", "--job-id", JOB],
        f"hpcbatch task list --job-id {JOB} -o json": [*hb, "task", "list", "--job-id", JOB,
                                                       "-o", "json"],
        f"hpcbatch task list --job-id {JOB}{TERMINAL}": [*hb, "task", "list", "--job-id", JOB],
    }


TERMINAL = " (terminal)"
"""Suffix of a command run with its stdout on a pseudo-terminal (a rich table) rather than
a pipe (plain columns, as a script reads them)."""


def run_in_terminal(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run of ``argv`` with its stdout on a pseudo-terminal, read to EOF."""
    import pty

    leader, follower = pty.openpty()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    try:
        while os.read(leader, 65536):
            pass
    except OSError:  # the terminal's other end closed
        pass
    finally:
        os.close(leader)
    code = proc.wait()
    seconds = time.perf_counter() - t0
    if code != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"{' '.join(argv)} exited {code}:\n{err}")
    return seconds


def run_once(argv: list[str], env: dict[str, str], terminal: bool = False) -> float:
    """Wall seconds of one run of ``argv`` to exit; the command must succeed."""
    if terminal:
        return run_in_terminal(argv, env)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n"
                         f"{proc.stderr.decode(errors='replace')}")
    return seconds


def imports_of(argv: list[str], env: dict[str, str], terminal: bool = False) -> dict[str, Any]:
    """Heavy packages a command imports, and the import time of ``hpcbatch`` (``-X importtime``;
    with ``terminal``, its stdout on a pseudo-terminal)."""
    import pty

    leader, follower = pty.openpty() if terminal else (None, None)
    try:
        proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env,
                              stdout=follower if terminal else subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, check=False)
    finally:
        for fd in (leader, follower):
            if fd is not None:
                os.close(fd)
    top: set[str] = set()
    hpcbatch_us = 0
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        name = m.group(3)
        top.add(name.split(".")[0])
        if len(m.group(2)) == 1 and (name == "hpcbatch" or name.startswith("hpcbatch.")):
            hpcbatch_us += int(m.group(1))
    return {"heavy_imports": sorted(top & set(HEAVY)),
            "hpcbatch_toplevel_import_ms": round(hpcbatch_us / 1000, 1)}


def main() -> int:
    def extra(p: Any) -> None:
        p.add_argument("--runs", type=int, default=None,
                       help="timed runs per command (default 15; --quick 5)")

    args = parse_args("bench_cli", __doc__.splitlines()[0], extra)
    runs = args.runs or (5 if args.quick else 15)
    cmds = commands()
    results: dict[str, Any] = {"benchmark": "cli", "runs": runs, "target_s": TARGET_S,
                               "tasks": TASKS, "commands": {}}
    with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-cli-") as tmpdir:
        state_dir = Path(tmpdir) / "state"
        with service(state_dir) as (client, _thread):
            client.create_job({"id": JOB, "poolInfo": {"poolId": "nonodes"}})
            client.create_tasks(JOB, [{"id": f"t{i}", "commandLine": "/bin/true"}
                                      for i in range(TASKS)])
            # As an installed package runs: bytecode cached (the warm-up run writes it).
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith("AZURE_BATCH_") and k != "PYTHONDONTWRITEBYTECODE"}
            env.update(HPCBATCH_STATE_DIR=str(state_dir), COLUMNS="120",
                       PYTHONPATH=os.pathsep.join(
                           [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
            samples: dict[str, list[float]] = {name: [] for name in cmds}
            for name, argv in cmds.items():
                run_once(argv, env, name.endswith(TERMINAL))  # warm up (untimed)
            for _ in range(runs):
                for name, argv in cmds.items():
                    samples[name].append(run_once(argv, env, name.endswith(TERMINAL)))
            imports = {name: imports_of(argv, env, name.endswith(TERMINAL))
                       for name, argv in cmds.items()}
    rows = []
    for name, argv in cmds.items():
        st = stats(samples[name])
        targeted = name in ("hpcbatch --version", f"hpcbatch task list --job-id {JOB}")
        ok = st["median_s"] <= TARGET_S if targeted else None
        results["commands"][name] = {"argv": argv[1:], **st, **imports[name],
                                     "target_met": ok}
        rows.append([name, st["median_s"] * 1000, st["best_s"] * 1000,
                     imports[name]["hpcbatch_toplevel_import_ms"],
                     len(imports[name]["heavy_imports"]), "-" if ok is None else verdict(ok)])
    met = all(c["target_met"] for c in results["commands"].values()
              if c["target_met"] is not None)
    results["target_met"] = met
    table(f"hpcbatch as a process: median and best of {runs} runs (target <= "
          f"{TARGET_S * 1000:.0f} ms for --version and task list)",
          ["command", "median ms", "best ms", "hpcbatch imports ms", "heavy packages",
           "target"], rows)
    print("\nheavy packages imported (of " + ", ".join(HEAVY) + "):")
    for name, res in results["commands"].items():
        print(f"  {name}: {', '.join(res['heavy_imports']) or 'none'}")
    print(f"\nverdict: {verdict(met)}")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
