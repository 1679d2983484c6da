"""``$TaskLog`` outputs of a run on local storage: hard links to the task's log files."""

from __future__ import annotations

from pathlib import Path

from hpcbatch.execution.transfer import StorageRef, persist_task_logs
from hpcbatch.storage.conventions import job_output_container_name


def test_logs_are_linked_and_a_missing_log_is_skipped(tmp_path: Path) -> None:
    storage = StorageRef(f"file://{tmp_path / 'storage'}", {})
    tdir = tmp_path / "node" / "workitems" / "j" / "job-1" / "t1"
    tdir.mkdir(parents=True)
    (tdir / "stdout.txt").write_text("out\n")  # no stderr.txt: the run never wrote one
    persist_task_logs(tdir, job_id="j", task_id="t1", storage=storage)
    saved = tmp_path / "storage" / job_output_container_name("j") / "t1" / "$TaskLog"
    assert sorted(p.name for p in saved.iterdir()) == ["stdout.txt"]
    assert (saved / "stdout.txt").stat().st_ino == (tdir / "stdout.txt").stat().st_ino
