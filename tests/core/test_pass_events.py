"""A scheduling pass writes the events of what it recorded right after its commit, before it
starts new runs: a service killed after the commit loses at most the events of a few
microseconds, not those of a whole pass (the chaos test checks that the event log and the
store agree after a SIGKILL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.batch.statedir import EVENTS_FILE
from tests.helpers import running_service, wait_until


def test_a_pass_writes_its_complete_events_before_it_starts_new_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    with running_service(state, scheduler_host="127.0.0.1") as (client, thread):
        client.add_hosts([{"name": "c0", "address": "127.0.0.1", "provider": "simulated",
                           "cores": 1, "labels": ["c"], "root_dir": str(tmp_path / "c0")}])
        client.create_pool({"id": "p", "vmSize": "c", "targetDedicatedNodes": 1,
                            "taskSlotsPerNode": 1})
        client.wait_for_pool("p", timeout_s=120)
        engine = thread.runtime.engine
        assert engine is not None
        logged_at_post: dict[str, list[str]] = {}
        post = engine.post

        def watched_post(worker: str, launches: list[Any], **kwargs: Any) -> None:
            lines = (state / EVENTS_FILE).read_text().splitlines()
            done = [json.loads(x)["body"]["id"] for x in lines
                    if json.loads(x)["name"] == "TaskCompleteEvent"]
            for launch in launches:
                logged_at_post[launch.task_id] = done
            post(worker, launches, **kwargs)

        monkeypatch.setattr(engine, "post", watched_post)
        client.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
        # One slot: t1 starts in the pass that records t0's end, t2 in the one that records t1's.
        client.create_tasks("j", [{"id": f"t{i}", "commandLine": "sleep 0.1"} for i in range(3)])
        wait_until(lambda: client.get_task_counts("j")["completed"] == 3, timeout_s=60,
                   what="three tasks done")
        assert logged_at_post == {"t0": [], "t1": ["t0"], "t2": ["t0", "t1"]}
