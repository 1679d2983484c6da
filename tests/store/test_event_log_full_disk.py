"""The event log on a full disk: a write that fails leaves no torn line behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hpcbatch.store.events import EventLog


def test_a_full_disk_drops_whole_events_and_never_tears_a_line(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                                            str(disk)], check=False, capture_output=True).returncode != 0:
        pytest.skip("needs a tmpfs (root)")
    try:
        log = EventLog(disk / "events.jsonl")
        body = {"id": "x" * 3000}
        written = failed = 0
        for _ in range(60):  # 60 x ~3 KB > 64 KiB: the disk fills
            try:
                log.emit("TaskStartEvent", body)
                written += 1
            except OSError:
                failed += 1
        with pytest.raises(OSError), log.held():  # a held burst fails whole as well
            log.emit("TaskStartEvent", body)
        assert written and failed
        lines = (disk / "events.jsonl").read_bytes().split(b"\n")
        assert lines[-1] == b"" and len(lines) - 1 == written
        assert all(json.loads(line)["body"] == body for line in lines[:-1])
        (disk / "events.jsonl").write_bytes(b"")  # room again: the log goes on
        log.close()
        log = EventLog(disk / "events.jsonl")
        log.emit("TaskCompleteEvent", {"id": "y"})
        log.close()
        assert json.loads((disk / "events.jsonl").read_text())["name"] == "TaskCompleteEvent"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)
