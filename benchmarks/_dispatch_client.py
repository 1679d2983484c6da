"""The user's side of ``bench_dispatch.py``: add N ``/bin/true`` tasks, wait for them.

Run as its own process (as a user's script or the CLI would be), so that the
benchmark's service process holds the service alone and the client's CPU is
measured apart from it::

    python benchmarks/_dispatch_client.py STATE_DIR JOB N POLL_S

It connects (``BatchClient.from_environment(STATE_DIR)``), prints ``ready``
and waits for a line on stdin; then adds N tasks ``t00000``... with
``create_tasks``, prints ``added``, waits with the SDK's ``wait_for_tasks``
(long polls of "Job - Get Task Counts", POLL_S seconds each at most) until all
N completed, and prints one JSON line: ``add_s`` and ``wall_s`` (from the
first add), ``t0_epoch`` (that first add, as ``time.time()``), ``polls``, the
last ``counts`` and ``cpu_ms_per_task`` (this process's user and system time
from the go line to the end, per task).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout first

from hpcbatch.client.sdk import BatchClient

TIMEOUT_S = 600


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main(argv: list[str]) -> int:
    state_dir, job, n, poll_s = argv[0], argv[1], int(argv[2]), float(argv[3])
    client = BatchClient.from_environment(state_dir)
    specs = [{"id": f"t{i:05d}", "commandLine": "/bin/true"} for i in range(n)]
    client.get_task_counts(job)  # the connection is made before the clock starts
    print("ready", flush=True)
    sys.stdin.readline()
    cpu0, t0, t0_epoch = _cpu_s(), time.perf_counter(), time.time()
    client.create_tasks(job, specs)
    add_s = time.perf_counter() - t0
    print("added", flush=True)
    polls = 0
    last: dict[str, int] = {}

    def progress(counts: dict[str, int]) -> None:
        nonlocal polls
        polls += 1
        last.update(counts)

    try:
        counts = client.wait_for_tasks(job, timeout_s=TIMEOUT_S, poll_interval_s=poll_s,
                                       progress=progress)
    except TimeoutError:
        print(json.dumps({"error": f"{job}: not done after {TIMEOUT_S} s: {last}"}))
        return 1
    wall_s = time.perf_counter() - t0
    print(json.dumps({"add_s": add_s, "wall_s": wall_s, "t0_epoch": t0_epoch, "polls": polls,
                      "counts": counts, "cpu_ms_per_task": (_cpu_s() - cpu0) / n * 1e3}), flush=True)
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
