"""Persisting task outputs through the File Conventions API vs a raw fsspec copy.

Subject: ``TaskOutputStorage(open_storage(url), job_id, task_id).save(TaskOutputKind.TaskOutput, path)``
for every file, run from the folder holding the files (as a task does: ``path``
is relative, so each file is stored as ``{container}/{taskId}/$TaskOutput/{name}``).
Opening the storage and building the ``TaskOutputStorage`` are inside the timing
(once per run, as in a task).

Baseline, in the same run: ``fs.put_file(src, dst)`` for the same files, with an
fsspec file system for the same storage, into a sibling folder of the same job
container (``{container}/raw-.../{name}``). For local storage the baseline also
creates its destination folder once per run (``LocalFileSystem`` does not).

Workloads: 1,000 small files of 1 KiB (files/s) and 10 large files of 64 MiB
(MB/s, 1 MB = 10^6 bytes); ``--quick``: 100 small, 2 large of 16 MiB.

Storages: (1) ``file://<tmpdir>`` and (2) a real Azurite blob service on loopback
through adlfs (``tests/azurite.py``; storage URL ``az://`` with the
connection string; baseline ``adlfs.AzureBlobFileSystem(connection_string=...)``).

Each run goes to fresh destinations. Conventions and raw runs are interleaved
(A B, then B A, ...) for R rounds (3), after an untimed warm-up of both; medians
are reported, with every sample in the JSON. Before each timed run dirty pages
are flushed (``os.sync()``) and, for local storage, the previous run's copies
removed, so neither side pays for the other's write-back. Every run is checked
afterwards (untimed): the right number of objects with the right sizes.

Target: the conventions path reaches >= 80% of the raw throughput, for each
storage and file size (median vs median).

    python benchmarks/bench_outputs.py [--quick] [--json PATH] [--rounds R] [--skip-azurite]
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import parse_args, stats, table, verdict, write_json

from hpcbatch.storage.conventions import (
    TaskOutputKind,
    TaskOutputStorage,
    job_output_container_name,
)
from hpcbatch.storage.fs import open_storage

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.80
JOB_ID = "bench-outputs"
KiB = 1024
MiB = 1024 * 1024


# ---------------------------------------------------------------- workloads

class Workload:
    """A set of source files in one folder (the 'task working directory')."""

    def __init__(self, name: str, folder: Path, count: int, size: int, unit: str) -> None:
        self.name = name
        self.folder = folder
        self.count = count
        self.size = size
        self.unit = unit  # "files/s" or "MB/s"
        folder.mkdir(parents=True, exist_ok=True)
        width = len(str(count - 1))
        self.names = [f"{name}-{i:0{width}d}.bin" for i in range(count)]
        for n in self.names:
            with open(folder / n, "wb") as f:
                left = size
                while left:
                    chunk = os.urandom(min(left, 4 * MiB))
                    f.write(chunk)
                    left -= len(chunk)

    @property
    def total_bytes(self) -> int:
        return self.count * self.size

    def rate(self, seconds: float) -> float:
        if self.unit == "files/s":
            return self.count / seconds
        return self.total_bytes / 1e6 / seconds


@contextmanager
def chdir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# ---------------------------------------------------------------- backends

class Backend:
    """One storage: how to open it the conventions way, the raw fs, and where raw copies go."""

    def __init__(self, label: str, url: str, options: dict[str, Any], raw_fs: Any,
                 raw_root: str, local_root: Path | None) -> None:
        self.label = label
        self.url = url
        self.options = options
        self.raw_fs = raw_fs
        self.raw_root = raw_root.rstrip("/")  # fs path of the storage root ("" for an account root)
        self.local_root = local_root
        self.container = job_output_container_name(JOB_ID)

    def fs_path(self, key: str) -> str:
        return f"{self.raw_root}/{key}" if self.raw_root else key

    # -- the two subjects

    def conventions(self, wl: Workload, task_id: str) -> float:
        with chdir(wl.folder):
            t0 = time.perf_counter()
            outputs = TaskOutputStorage(open_storage(self.url, self.options), JOB_ID, task_id)
            for name in wl.names:
                outputs.save(TaskOutputKind.TaskOutput, name)
            return time.perf_counter() - t0

    def raw(self, wl: Workload, folder: str) -> float:
        fs = self.raw_fs
        src = str(wl.folder)
        dst = self.fs_path(f"{self.container}/{folder}")
        t0 = time.perf_counter()
        if self.local_root is not None:
            fs.makedirs(dst, exist_ok=True)
        for name in wl.names:
            fs.put_file(f"{src}/{name}", f"{dst}/{name}")
        return time.perf_counter() - t0

    # -- untimed checks and cleanup

    def check(self, wl: Workload, folder_key: str) -> None:
        path = self.fs_path(f"{self.container}/{folder_key}")
        self.raw_fs.invalidate_cache()
        found = self.raw_fs.find(path, detail=True)
        sizes = sorted(int(info["size"]) for info in found.values() if info.get("type") == "file")
        assert sizes == [wl.size] * wl.count, (
            f"{self.label}: {path} holds {len(sizes)} objects, expected {wl.count} of {wl.size} B")

    def cleanup(self, folder_key: str) -> None:
        if self.local_root is not None:  # bound disk use; Azurite's workspace goes at the end
            shutil.rmtree(self.local_root / self.container / folder_key.split("/")[0],
                          ignore_errors=True)


def measure(backend: Backend, workloads: list[Workload], rounds: int) -> dict[str, Any]:
    """Warm up, then ``rounds`` interleaved conventions / raw runs of every workload."""
    out: dict[str, Any] = {"url": backend.url, "fs": type(backend.raw_fs).__name__}
    pending: list[str] = []

    def run(fn: Callable[[Workload, str], float], wl: Workload, key: str, check_key: str,
            cpu: list[float] | None = None) -> float:
        for old in pending:
            backend.cleanup(old)
        pending.clear()
        os.sync()
        c0 = time.process_time()
        seconds = fn(wl, key)
        if cpu is not None:
            cpu.append(time.process_time() - c0)
        backend.check(wl, check_key)
        pending.append(check_key)
        return seconds

    for wl in workloads:
        # warm-up (untimed): connections, imports, container creation, code paths
        run(backend.conventions, wl, f"warmup-{wl.name}", f"warmup-{wl.name}/$TaskOutput")
        run(backend.raw, wl, f"raw-warmup-{wl.name}", f"raw-warmup-{wl.name}")
        conv_s: list[float] = []
        raw_s: list[float] = []
        conv_cpu: list[float] = []
        raw_cpu: list[float] = []
        for r in range(rounds):
            task_id, raw_folder = f"task-{wl.name}-r{r}", f"raw-{wl.name}-r{r}"
            order = ["conv", "raw"] if r % 2 == 0 else ["raw", "conv"]
            for which in order:
                if which == "conv":
                    conv_s.append(run(backend.conventions, wl, task_id, f"{task_id}/$TaskOutput",
                                      conv_cpu))
                else:
                    raw_s.append(run(backend.raw, wl, raw_folder, raw_folder, raw_cpu))
            print(f"  {backend.label:6} {wl.name:5} round {r + 1}/{rounds}: "
                  f"conventions {wl.rate(conv_s[-1]):10,.1f} {wl.unit}, "
                  f"raw {wl.rate(raw_s[-1]):10,.1f} {wl.unit} ({order[0]} first)", flush=True)
        for old in pending:
            backend.cleanup(old)
        pending.clear()

        def entry(samples: list[float], cpu: list[float], wl: Workload = wl) -> dict[str, Any]:
            s = stats(samples)
            s["rate_median"] = wl.rate(s["median_s"])
            s["rate_best"] = wl.rate(s["best_s"])
            s["rate_samples"] = [wl.rate(x) for x in samples]
            # CPU time of this (the client) process, all threads: less sensitive to other load
            # on the machine than wall time (Azurite's own CPU is not included)
            s["cpu_s_median"] = statistics.median(cpu)
            s["cpu_s_samples"] = cpu
            s["cpu_us_per_file_median"] = statistics.median(cpu) / wl.count * 1e6
            return s

        conv, raw = entry(conv_s, conv_cpu), entry(raw_s, raw_cpu)
        ratio = conv["rate_median"] / raw["rate_median"]
        out[wl.name] = {
            "files": wl.count, "file_bytes": wl.size, "unit": wl.unit,
            "conventions": conv, "raw": raw,
            "ratio_median": ratio,
            "cpu_ratio_raw_over_conventions": raw["cpu_s_median"] / conv["cpu_s_median"],
            "ratio_per_round": [c / r for c, r in zip(conv["rate_samples"], raw["rate_samples"])],
            "target_met": ratio >= TARGET_RATIO,
        }
    return out


# ---------------------------------------------------------------- main

def cpu_pressure() -> dict[str, Any]:
    """Load of the machine now: load average and Linux PSI 'some' CPU pressure (% of time)."""
    out: dict[str, Any] = {"load_average_1_5_15": list(os.getloadavg())}
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        out["cpu_pressure_some"] = {k: float(v) for k, v in
                                    (f.split("=") for f in line.split()[1:]) if k != "total"}
    except (OSError, IndexError, ValueError):
        pass
    return out


def local_backend(tmp: Path) -> Backend:
    from fsspec.implementations.local import LocalFileSystem

    root = tmp / "storage"
    root.mkdir()
    return Backend("local", root.as_uri(), {}, LocalFileSystem(), str(root), root)


@contextmanager
def azurite_backend() -> Iterator[Backend]:
    sys.path.insert(0, str(REPO))
    import adlfs

    from tests.azurite import azurite

    with azurite() as conn:
        fs = adlfs.AzureBlobFileSystem(connection_string=conn)
        yield Backend("azurite", "az://", {"connection_string": conn}, fs, "", None)


def main() -> int:
    def extra(p: Any) -> None:
        p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
        p.add_argument("--skip-azurite", action="store_true", help="local storage only")

    args = parse_args("bench_outputs", __doc__.splitlines()[0], extra)
    small_n, small_size = (100, KiB) if args.quick else (1000, KiB)
    large_n, large_size = (2, 16 * MiB) if args.quick else (10, 64 * MiB)
    results: dict[str, Any] = {
        "benchmark": "outputs", "quick": args.quick, "rounds": args.rounds,
        "target_ratio": TARGET_RATIO, "job_id": JOB_ID,
        "small": {"files": small_n, "file_bytes": small_size},
        "large": {"files": large_n, "file_bytes": large_size},
        "backends": {}, "machine_load_at_start": cpu_pressure(),
    }
    with tempfile.TemporaryDirectory(prefix="hpcbatch-bench-outputs-") as tmpdir:
        tmp = Path(tmpdir)
        t0 = time.perf_counter()
        workloads = [Workload("small", tmp / "src" / "small", small_n, small_size, "files/s"),
                     Workload("large", tmp / "src" / "large", large_n, large_size, "MB/s")]
        print(f"sources written in {time.perf_counter() - t0:.1f} s: {small_n} x {small_size} B, "
              f"{large_n} x {large_size // MiB} MiB", flush=True)

        local = local_backend(tmp)
        results["backends"]["local"] = measure(local, workloads, args.rounds)
        if not args.skip_azurite:
            try:
                with azurite_backend() as az:
                    same = open_storage(az.url, az.options).fs is az.raw_fs
                    results["backends"]["azurite"] = measure(az, workloads, args.rounds)
                    results["backends"]["azurite"]["same_fs_instance"] = same
            except Exception as exc:  # noqa: BLE001 - no node/npm, Azurite would not start, a check failed...
                print(f"azurite: {type(exc).__name__}: {exc}")
                results["backends"]["azurite"] = {"error": f"{type(exc).__name__}: {exc}"}

    rows = []
    notes = []
    met = True
    for label, b in results["backends"].items():
        if "error" in b:
            met = False
            continue
        for wl in workloads:
            r = b[wl.name]
            met = met and r["target_met"]
            where = f"{label} {r['files']:,}x{_size(r['file_bytes'])}"
            row_label = f"{where} ({wl.unit})"
            for path, key in (("conventions", "conventions"), ("raw put_file", "raw")):
                e = r[key]
                first = key == "conventions"
                ratio = f"{r['ratio_median']:.0%} {verdict(r['target_met'])}" if first else ""
                rows.append([row_label if first else "", path, _num(e["rate_median"]),
                             f"{_num(min(e['rate_samples']))}-{_num(max(e['rate_samples']))}",
                             e["median_s"], e["cpu_us_per_file_median"], ratio])
            notes.append(f"  {where}: conventions/raw per round "
                         + ", ".join(f"{x:.0%}" for x in r["ratio_per_round"]))
    results["target_met"] = met
    results["machine_load_at_end"] = cpu_pressure()
    table(f"persisting outputs: conventions vs raw fsspec (median of {args.rounds}, interleaved)",
          ["storage, files", "path", "median", "min-max", "median s", "CPU us/file", "ratio"],
          rows)
    print("\n".join(notes))
    print(f"target: conventions >= {TARGET_RATIO:.0%} of raw throughput everywhere -> {verdict(met)}")
    load = results["machine_load_at_end"]
    print(f"machine load at end: {load['load_average_1_5_15'][0]:.1f} (1 min, {os.cpu_count()} CPUs)"
          + (f", CPU pressure {load['cpu_pressure_some']['avg60']:.0f}% (60 s)"
             if "cpu_pressure_some" in load else "")
          + " -- wall-clock rates are noisy on a loaded machine; CPU us/file is this process's CPU")
    write_json(args.json, results)
    return 0


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _size(n: int) -> str:
    return f"{n // MiB}MiB" if n >= MiB else f"{n // KiB}KiB"


if __name__ == "__main__":
    raise SystemExit(main())
