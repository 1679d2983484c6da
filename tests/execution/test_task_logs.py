"""``$TaskLog`` outputs of a run on local storage: hard links to the task's log files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcbatch.execution.transfer import StorageRef, persist_task_logs
from hpcbatch.storage.conventions import job_output_container_name
from hpcbatch.storage.fs import StorageKeyError, StorageNotFoundError, open_storage


def test_logs_are_linked_and_a_missing_log_is_skipped(tmp_path: Path) -> None:
    storage = StorageRef(f"file://{tmp_path / 'storage'}", {})
    tdir = tmp_path / "node" / "workitems" / "j" / "job-1" / "t1"
    tdir.mkdir(parents=True)
    (tdir / "stdout.txt").write_text("out\n")  # no stderr.txt: the run never wrote one
    persist_task_logs(tdir, job_id="j", task_id="t1", storage=storage)
    saved = tmp_path / "storage" / job_output_container_name("j") / "t1" / "$TaskLog"
    assert sorted(p.name for p in saved.iterdir()) == ["stdout.txt"]
    assert (saved / "stdout.txt").stat().st_ino == (tdir / "stdout.txt").stat().st_ino


def test_a_retry_replaces_the_saved_logs(tmp_path: Path) -> None:
    storage = StorageRef(f"file://{tmp_path / 'storage'}", {})
    tdir = tmp_path / "node" / "t1"
    tdir.mkdir(parents=True)
    for text in ("first run\n", "second run\n"):
        for name in ("stdout.txt", "stderr.txt"):  # the agent replaces a retry's logs
            (tdir / name).unlink(missing_ok=True)
            (tdir / name).write_text(f"{name}: {text}")
        persist_task_logs(tdir, job_id="j", task_id="t1", storage=storage)
    saved = tmp_path / "storage" / job_output_container_name("j") / "t1" / "$TaskLog"
    assert (saved / "stdout.txt").read_text() == "stdout.txt: second run\n"
    assert (saved / "stderr.txt").read_text() == "stderr.txt: second run\n"
    assert (saved / "stderr.txt").stat().st_ino == (tdir / "stderr.txt").stat().st_ino


def test_put_files_makes_the_folders_and_links_on_local_storage(tmp_path: Path) -> None:
    st = open_storage(f"file://{tmp_path / 'storage'}")
    src = tmp_path / "a.txt"
    src.write_text("a")
    stored = st.put_files([(src, "c1/deep/er/a.txt"), (str(src), "c2/b.txt")], link=True)
    assert stored == 2
    assert st.get_bytes("c1/deep/er/a.txt") == b"a" and st.get_bytes("c2/b.txt") == b"a"
    assert (tmp_path / "storage" / "c1" / "deep" / "er" / "a.txt").stat().st_ino \
        == src.stat().st_ino
    copied = st.put_files([(src, "c3/copy.txt")])  # no link asked: a copy
    assert copied == 1
    assert (tmp_path / "storage" / "c3" / "copy.txt").stat().st_ino != src.stat().st_ino


@pytest.mark.parametrize("url", ["file://{tmp}/storage", "memory://put-files-{name}"])
def test_put_files_missing_local_file(tmp_path: Path, url: str) -> None:
    st = open_storage(url.format(tmp=tmp_path, name=tmp_path.name))
    present = tmp_path / "present.txt"
    present.write_text("p")
    missing = tmp_path / "missing.txt"
    pairs = [(present, "c/present.txt"), (missing, "c/missing.txt")]
    assert st.put_files(pairs, link=True, missing_ok=True) == 1
    assert st.get_bytes("c/present.txt") == b"p" and not st.exists("c/missing.txt")
    with pytest.raises(StorageNotFoundError, match=r"missing\.txt"):
        st.put_files(pairs, link=True)


def test_put_files_checks_every_key_before_writing(tmp_path: Path) -> None:
    st = open_storage(f"file://{tmp_path / 'storage'}")
    src = tmp_path / "a.txt"
    src.write_text("a")
    with pytest.raises(StorageKeyError, match=r"'\.\.'"):
        st.put_files([(src, "c/ok.txt"), (src, "c/../escape.txt")])
    assert not st.exists("c/ok.txt")
    with pytest.raises(StorageKeyError, match="names only a container"):
        st.put_files([(src, "c")])
