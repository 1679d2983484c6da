"""The quickstart, the main job on the embedded default, runs end to end."""

from __future__ import annotations

import io

from rich.console import Console

from hpcbatch.client import quickstart


def test_quickstart_runs_tasks_and_an_mpi_task_on_local_nodes(tmp_path):
    out = io.StringIO()
    code = quickstart.main(nodes=3, state_dir=tmp_path, console=Console(file=out, width=200))
    text = out.getvalue()
    assert code == 0, text
    assert "primes below 240000: 21221 (12 succeeded, 0 failed)" in text
    for rank, node in ((0, "local-1"), (1, "local-2"), (2, "local-3")):
        assert f"│ {rank}    │ {node} │" in text
    assert (tmp_path / "nodes").is_dir()
