"""Tiny helpers shared by the benchmark scripts (not a library: keep it small).

- :func:`parse_args`: ``--quick`` and ``--json PATH`` for every script;
- :func:`service`: an hpcbatch service in a thread on a state dir, and its client;
- :func:`stats`: best / median / all of repeated timings;
- :func:`table`: print rows side by side (rich when installed, else plain);
- :func:`write_json`: write the results to ``benchmarks/results/<name>.json``;
- :func:`start_profile` / :func:`stop_profile`: py-spy on a process (``--profile``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Measure this checkout, whatever `pip install -e` points at (another clone, for instance).
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hpcbatch.api.server import ServiceConfig, ServiceThread  # noqa: E402 - after the sys.path line above
from hpcbatch.client.sdk import BatchClient  # noqa: E402 - after the sys.path line above

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def node_python(directory: Path) -> str:
    """Write ``directory/python``: this interpreter with this checkout first on its path.

    For inventory hosts (``python``), so that node processes started over SSH
    run the same hpcbatch code as the service under test.
    """
    path = Path(directory) / "python"
    path.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}" '
                    f'exec "{sys.executable}" "$@"\n')
    path.chmod(0o755)
    return str(path)


def node_pids(testbed_dir: Path) -> dict[str, int]:
    """The node processes of a testbed by node folder name (the pid each records in its
    root: they are forked by ``python -m hpcbatch.node --launch``, whose command line
    names no root)."""
    return {f.parent.name: int(f.read_text().strip()) for f in testbed_dir.rglob("node.pid")}


def start_profile(pid: int, path: str) -> subprocess.Popen[bytes]:
    """Start py-spy sampling process ``pid`` into collapsed stacks at ``path``.

    250 samples a second (``HPCBATCH_PROFILE_HZ`` sets another rate: 997 gives
    a node process of a short run enough samples) of the thread holding the
    GIL (``--gil``: the process's Python CPU, not its waits); ``--format raw``
    is one line a stack with its count, for any flame graph tool.
    """
    rate = os.environ.get("HPCBATCH_PROFILE_HZ", "250")
    return subprocess.Popen(["py-spy", "record", "-p", str(pid), "-r", rate,
                             "--nonblocking", "--gil", "--format", "raw", "-o", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profile(prof: subprocess.Popen[bytes] | None) -> None:
    """Stop a :func:`start_profile` sampler and wait for its file."""
    if prof is not None:
        prof.send_signal(signal.SIGINT)
        prof.wait(60)


def _checkout() -> dict[str, Any]:
    import hpcbatch

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                                  text=True, timeout=10, check=False).stdout.strip()
        except OSError:
            return ""

    return {"hpcbatch": str(Path(hpcbatch.__file__).parent), "commit": git("rev-parse", "HEAD"),
            "modified_files": git("status", "--porcelain", "--untracked-files=no").splitlines()}


def parse_args(name: str, description: str,
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """Parse ``--quick`` and ``--json PATH`` (default ``benchmarks/results/<name>.json``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smaller, faster run")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / f"{name}.json",
                   help="where to write the results (default: %(default)s)")
    if extra:
        extra(p)
    return p.parse_args()


@contextmanager
def service(state_dir: Path, **config: Any) -> Iterator[tuple[BatchClient, ServiceThread]]:
    """Run a service (REST on port 0) on its own loop in a thread; yield ``(client, thread)``."""
    config.setdefault("scheduler_host", "127.0.0.1")
    thread = ServiceThread(ServiceConfig(state_dir=Path(state_dir), port=0, **config))
    runtime = thread.start()
    client = BatchClient.from_environment(runtime.state_dir)
    try:
        yield client, thread
    finally:
        client.close()
        thread.stop()


def timed(fn: Callable[[], Any], collect: bool = False) -> tuple[float, Any]:
    """Return ``(seconds, result)`` of one call of ``fn``.

    With ``collect``, a full garbage collection runs first (untimed), so that a
    sample does not pay for a full collection of the heap the earlier samples
    left (the service, its Dask client and the SDK all share this process's
    heap, far larger than a client's own).
    """
    if collect:
        gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def stats(samples_s: Sequence[float]) -> dict[str, Any]:
    """Best, median and every sample (seconds)."""
    return {"best_s": min(samples_s), "median_s": statistics.median(samples_s),
            "samples_s": list(samples_s)}


def environment() -> dict[str, Any]:
    """Where the figures were measured."""
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "load_average_1_5_15": list(os.getloadavg()),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **_checkout()}


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table: rich when available, else aligned plain text."""
    cells = [[_fmt(c) for c in r] for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
        print(f"\n{title}")
        print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
        print("  ".join("-" * w for w in widths))
        for r in cells:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        return
    t = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        t.add_column(str(h), justify="left" if i == 0 else "right")
    for r in cells:
        t.add_row(*r)
    Console(width=max(100, Console().width)).print(t)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        if value >= 1:
            return f"{value:.2f}"
        return f"{value:.4f}"
    return str(value)


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` (plus the environment) as JSON to ``path``; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**data, "environment": environment()}, indent=2) + "\n")
    print(f"\nresults written to {path}")
    return path
