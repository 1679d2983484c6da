"""Endurance, CI-sized: two minutes of steady load on simulated nodes (``benchmarks/bench_soak.py``).

The service runs as its own process with 50 simulated nodes; short tasks are
added every second to rotating jobs, and finished jobs are deleted, so the
service holds a bounded amount of work. After warm-up (the first third) its
RSS, open files, threads and store size must stay flat: the last third's
growth over the middle third is bounded (limits in ``bench_soak.verdict``).
Behaviour, not speed: the load is fixed, the figures are the service's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.soak


def test_service_resources_stay_flat_under_steady_load(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_soak.py"), "--quick", "--rate", "100",
         "--nodes", "50", "--interval", "2", "--json", str(out)],
        cwd=ROOT / "benchmarks", capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    samples = result["samples"]
    assert len(samples) >= 30, len(samples)
    # the load ran: tasks were added and jobs completed and were deleted along the way
    assert result["tasks_added"] >= 100 * 60
    assert samples[-1]["completed"] > 0
    verdict = result["verdict"]
    for key in ("rss_bytes", "open_files", "threads", "store_bytes"):
        assert verdict[key]["flat"], (key, verdict[key], [s[key] for s in samples])
