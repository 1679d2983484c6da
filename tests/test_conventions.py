"""Batch File Conventions (hpcbatch.storage.conventions) on hpcbatch.storage.fs.

Container-name vectors come from the .NET library's own unit tests
(Azure/azure-sdk-for-net, sdk/batch/Microsoft.Azure.Batch.Conventions.Files/
tests/UnitTests/Utilities/ContainerNameUtilsTests.cs) and from working the
ContainerNameUtils.cs algorithm by hand. Output round trips run on ``file://``
storage and on a real Azurite blob service (tests/azurite.py) through adlfs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.storage.conventions import (
    JobOutputKind,
    JobOutputStorage,
    OutputFile,
    TaskOutputKind,
    TaskOutputStorage,
    destination_path,
    job_output_container_name,
    prepare_output_storage,
)
from hpcbatch.storage.fs import (
    ENV_STORAGE_OPTIONS,
    ENV_STORAGE_URL,
    Storage,
    StorageConfigurationError,
    StorageKeyError,
    StorageNotFoundError,
    default_storage_url,
    open_storage,
    open_storage_from_environment,
    storage_environment,
)
from tests.azurite import azurite

REPO = Path(__file__).resolve().parents[1]


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


# =========================================================================== container names

# ContainerNameUtilsTests.ContainerNameSafeJobIdGeneratesSimpleContainerName
DOTNET_SIMPLE = [
    ("job-15", "job-job-15"),
    ("MyTerrificJob", "job-myterrificjob"),
    ("J", "job-j"),
    ("j", "job-j"),
]

# ContainerNameUtilsTests.ContainerNameUnsafeJobIdGeneratesTransformedContainerName
DOTNET_TRANSFORMED = [
    ("my_job-bob", "job-my-job-bob-e04620bc2add214df74e158ba60d24273a0e0927"),
    ("-my_job-sam--", "job-my-job-sam-47f54d840815af2592a12213db05f8a8277a098d"),
    ("my-_EVEN_MORE_-terrific-job", "job-my-even-more-te-68b05a7d8aa6aa65b9a6892c667a6c406a16ad65"),
    ("---", "job-job-58b63e273b964039d6ef432a415df3f177c818e5"),
    ("-_-", "job-job-6fe16b401f95cfcf3aba78023b0a14ef782813e1"),
    ("-", "job-job-3bc15c8aae3e4124dd409035f32ea2fd6835efc9"),
    ("_", "job-job-53a0acfad59379b3e050338bf9f23cfc172ee787"),
    ("myverylongjobnameallinonewordreallystartingtogetreallysillynow",
     "job-myverylongjobna-a8700e4947d0c8c621e53b24246aa0349d830e41"),
]


@pytest.mark.parametrize(("job_id", "expected"), DOTNET_SIMPLE + DOTNET_TRANSFORMED)
def test_container_name_matches_dotnet_unit_test_vectors(job_id: str, expected: str) -> None:
    assert job_output_container_name(job_id) == expected


# Worked by hand from ContainerNameUtils.cs: (id, readable part, text hashed) or (id, full name)
HAND_TRANSFORMED = [
    # mixed case: lower-cased first, then hashed lower-case
    ("Render_Job", "render-job", "render_job"),
    # colon (job schedule job IDs) is replaced like '_'
    ("sched:job-1", "sched-job-1", "sched:job-1"),
    # a run of mixed separators becomes one dash
    ("a_-:_b", "a-b", "a_-:_b"),
    # doubled dash alone makes the ID invalid
    ("a--b", "a-b", "a--b"),
    # trailing / leading dash
    ("abc-", "abc", "abc-"),
    ("-abc", "abc", "-abc"),
    # 18 chars -> cut to 15 "abcdefghijklmn-" -> trailing dash stripped again -> 14
    ("abcdefghijklmn_opq", "abcdefghijklmn", "abcdefghijklmn_opq"),
    # exactly 15 after sanitising: kept whole
    ("ABCDEFGHIJKLMN_", "abcdefghijklmn", "abcdefghijklmn_"),
    ("abcdefghijklmno_", "abcdefghijklmno", "abcdefghijklmno_"),
    # only separators: becomes too short (empty) -> "job"
    ("__::--", "job", "__::--"),
    (":", "job", ":"),
    # a single letter survives: "job-" guarantees the 3-character minimum
    ("_A_", "a", "_a_"),
    # 60 characters: one over the 59 that fit after "job-"
    ("a" * 60, "a" * 15, "a" * 60),
    # 64 characters (Batch's maximum), mixed case
    ("Long" * 16, "longlonglonglon", "long" * 16),
]


@pytest.mark.parametrize(("job_id", "readable", "hashed"), HAND_TRANSFORMED)
def test_container_name_transformed_by_hand(job_id: str, readable: str, hashed: str) -> None:
    name = job_output_container_name(job_id)
    assert name == f"job-{readable}-{sha1(hashed)}"
    assert len(name) <= 63


@pytest.mark.parametrize(("job_id", "expected"), [
    ("a" * 59, "job-" + "a" * 59),          # 63 characters: the longest kept as is
    ("Job-1", "job-job-1"),
    ("UPPER-lower-123", "job-upper-lower-123"),
    ("0", "job-0"),
])
def test_container_name_valid_ids_are_only_lower_cased(job_id: str, expected: str) -> None:
    assert job_output_container_name(job_id) == expected
    assert len(expected) <= 63


def test_container_name_ignores_case_like_batch_ids() -> None:
    assert job_output_container_name("MyJob_1") == job_output_container_name("myjob_1")


def test_container_name_rejects_empty_id() -> None:
    with pytest.raises(StorageKeyError):
        job_output_container_name("")


_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_:"
_AZURE_CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


def test_container_names_obey_azure_rules_for_random_batch_ids() -> None:
    """Port of the FsCheck properties of ContainerNameUtilsTests (BatchIdGenerator)."""
    rng = random.Random(20170308)
    for _ in range(3000):
        job_id = "".join(rng.choice(_ID_CHARS) for _ in range(rng.randint(1, 64)))
        name = job_output_container_name(job_id)
        assert _AZURE_CONTAINER.match(name), (job_id, name)


def test_valid_container_name_ids_are_not_munged() -> None:
    """ValidContainerNamesAreNotMunged, with BatchIdThatIsValidContainerName's generator."""
    rng = random.Random(7)
    terminal, middle = "abcdefghijklmnopqrstuvwxyz0123456789", "abcdefghijklmnopqrstuvwxyz0123456789-"
    tried = 0
    while tried < 1000:
        mid = "".join(rng.choice(middle) for _ in range(rng.randint(1, 57)))
        job_id = rng.choice(terminal) + mid + rng.choice(terminal)
        if "--" in job_id:
            continue
        tried += 1
        assert job_output_container_name(job_id) == "job-" + job_id


# =========================================================================== kinds and paths


def test_predefined_and_custom_kinds() -> None:
    assert str(TaskOutputKind.TaskOutput) == "TaskOutput"
    assert [str(k) for k in (TaskOutputKind.TaskPreview, TaskOutputKind.TaskLog,
                             TaskOutputKind.TaskIntermediate)] == ["TaskPreview", "TaskLog", "TaskIntermediate"]
    assert [str(k) for k in (JobOutputKind.JobOutput, JobOutputKind.JobPreview)] == ["JobOutput", "JobPreview"]
    assert TaskOutputKind.custom("TaskOutput") == TaskOutputKind.TaskOutput
    assert TaskOutputKind.custom("taskoutput") != TaskOutputKind.TaskOutput  # case-sensitive (Ordinal)
    assert TaskOutputKind.custom("X") != JobOutputKind.custom("X")
    assert len({TaskOutputKind.custom("A"), TaskOutputKind.custom("A")}) == 1
    with pytest.raises(StorageKeyError):
        TaskOutputKind.custom("")
    with pytest.raises(StorageKeyError):
        JobOutputKind.custom("a/b")


def test_output_storage_paths_match_dotnet() -> None:
    """TaskOutputStorageUnitTests / CloudJobExtensionsUnitTests.GetTaskOutputStoragePathReturnsExpectedValue."""
    storage = open_storage("memory://conventions-paths")
    task = TaskOutputStorage(storage, "fakejob", "test-task")
    assert task.get_output_storage_path(TaskOutputKind.TaskLog) == "test-task/$TaskLog"
    assert task.get_output_storage_path(TaskOutputKind.TaskOutput) == "test-task/$TaskOutput"
    assert task.get_output_storage_path(TaskOutputKind.TaskPreview) == "test-task/$TaskPreview"
    assert task.get_output_storage_path(TaskOutputKind.custom("foo")) == "test-task/$foo"
    job = JobOutputStorage(storage, "fakejob")
    assert job.get_output_storage_path(JobOutputKind.JobOutput) == "$JobOutput"
    assert job.get_output_storage_path(JobOutputKind.JobPreview) == "$JobPreview"
    assert job.get_output_storage_path(JobOutputKind.custom("foo")) == "$foo"
    # README examples
    assert (TaskOutputStorage(storage, "j", "analysis-309").key_for(TaskOutputKind.TaskLog, "analytics.log")
            == "job-j/analysis-309/$TaskLog/analytics.log")
    assert (JobOutputStorage(storage, "j").key_for(JobOutputKind.JobOutput, "out/mergeresults.txt")
            == "job-j/$JobOutput/out/mergeresults.txt")


@pytest.mark.parametrize(("relative", "expected"), [
    ("TestText1.txt", "TestText1.txt"),
    ("File\\Under\\TestText2.txt", "File/Under/TestText2.txt"),   # IfAFileWithAMultiLevelPathIsSaved
    ("..\\TestTextForOutsideWorkingDirectory.txt", "TestTextForOutsideWorkingDirectory.txt"),
    ("../stdout.txt", "stdout.txt"),
    ("../../../x/y.txt", "x/y.txt"),
    ("./a/./b.txt", "a/b.txt"),
])
def test_destination_path(relative: str, expected: str) -> None:
    assert destination_path(relative) == expected


@pytest.mark.parametrize("relative", [
    "", "Under\\..\\..\\..\\..\\TestTextForFarOutsideWorkingDirectory.txt", "a/../../x", "..", "dir/",
])
def test_destination_path_refuses_paths_outside_the_kind_folder(relative: str) -> None:
    with pytest.raises(StorageKeyError):
        destination_path(relative)


def test_kind_of_the_wrong_family_is_refused() -> None:
    task = TaskOutputStorage(open_storage("memory://conventions-kinds"), "j", "t")
    with pytest.raises(TypeError):
        task.list_outputs(JobOutputKind.JobOutput)  # type: ignore[arg-type]
    assert task.list_outputs("TaskOutput") == []  # a kind may be given by name


# =========================================================================== storage backends


@dataclass
class Backend:
    name: str
    url: str
    options: dict[str, Any]

    def open(self) -> Storage:
        return open_storage(self.url, self.options)


@pytest.fixture(scope="module")
def azurite_connection_string() -> Iterator[str]:
    """A real Azurite blob service on a free 127.0.0.1 port (installed on first use)."""
    with azurite() as cs:
        yield cs


@pytest.fixture(params=["file", "azure"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "file":
        return Backend("file", (tmp_path / "storage").as_uri(), {})
    cs = request.getfixturevalue("azurite_connection_string")
    return Backend("azure", "az://", {"connection_string": cs})


def _unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}{int(time.time() * 1000) % 100000000}{random.randrange(1000)}"


def _task_env(backend: Backend, job_id: str, task_id: str, task_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AZURE_STORAGE_", "HPCBATCH_STORAGE", "AWS_"))}
    env.update(storage_environment(backend.url, backend.options))
    env.update({
        "AZ_BATCH_JOB_ID": job_id,
        "AZ_BATCH_TASK_ID": task_id,
        "AZ_BATCH_TASK_DIR": str(task_dir),
        "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd"),
        "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    })
    return env


TASK_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from hpcbatch.storage.conventions import (
        JobOutputKind,
        JobOutputStorage,
        TaskOutputKind,
        TaskOutputStorage,
    )

    outputs = TaskOutputStorage.from_environment()
    stdout = Path("..", "stdout.txt")
    with outputs.save_tracked(TaskOutputKind.TaskLog, "../stdout.txt", interval_s=0.05):
        with open(stdout, "a") as log:
            log.write("starting\\n"); log.flush()
            Path("out").mkdir()
            Path("out", "frame1.txt").write_text("full resolution frame")
            Path("preview-src.txt").write_text("low resolution frame")
            Path("checkpoint.bin").write_bytes(bytes(range(256)) * 4)
            outputs.save(TaskOutputKind.TaskOutput, "out/frame1.txt")
            outputs.save(TaskOutputKind.TaskPreview, "preview-src.txt", dest="frame1_preview.txt")
            outputs.save(TaskOutputKind.TaskIntermediate, "checkpoint.bin")
            outputs.save_text(TaskOutputKind.custom("TaskOutputExtra"), "extra", "extra.txt")
            outputs.save_text(TaskOutputKind.custom("Metrics"), '{"frames": 1}', "metrics/run.json")
            log.write("done\\n")
    JobOutputStorage.from_environment().save_text(JobOutputKind.JobOutput, "merged movie", "movie.txt")
    print("task finished")
""")


def test_task_saves_outputs_and_a_client_reads_them_back(backend: Backend, tmp_path: Path) -> None:
    job_id, task_id = _unique("Render_Job:"), "frame-0001"
    task_dir = tmp_path / "node" / "workitems" / job_id.replace(":", "_") / "job-1" / task_id
    (task_dir / "wd").mkdir(parents=True)

    # the task: its own process, given only its environment (as the node agent would)
    proc = subprocess.run([sys.executable, "-c", TASK_SCRIPT], cwd=task_dir / "wd",
                          env=_task_env(backend, job_id, task_id, task_dir),
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "task finished" in proc.stdout

    # a client that knows only the storage and the job and task IDs
    client = TaskOutputStorage(backend.open(), job_id, task_id)
    container = job_output_container_name(job_id)
    assert container == f"job-{_readable_tail(job_id)}-{sha1(job_id.lower())}"
    assert client.container_name == container

    outputs = client.list_outputs(TaskOutputKind.TaskOutput)
    assert [o.path for o in outputs] == ["out/frame1.txt"]  # not TaskOutputExtra's file
    assert outputs[0].size_bytes == len("full resolution frame")
    assert outputs[0].key == f"{container}/{task_id}/$TaskOutput/out/frame1.txt"
    assert [o.path for o in client.list_outputs(TaskOutputKind.TaskPreview)] == ["frame1_preview.txt"]
    assert [o.path for o in client.list_outputs(TaskOutputKind.TaskLog)] == ["stdout.txt"]
    assert [o.path for o in client.list_outputs(TaskOutputKind.TaskIntermediate)] == ["checkpoint.bin"]
    assert [o.path for o in client.list_outputs(TaskOutputKind.custom("TaskOutputExtra"))] == ["extra.txt"]
    assert [o.path for o in client.list_outputs(TaskOutputKind.custom("Metrics"))] == ["metrics/run.json"]
    assert client.list_outputs(TaskOutputKind.custom("Nothing")) == []

    assert client.get_bytes(TaskOutputKind.TaskOutput, "out/frame1.txt") == b"full resolution frame"
    assert client.get_bytes(TaskOutputKind.TaskPreview, "frame1_preview.txt") == b"low resolution frame"
    assert client.get_bytes(TaskOutputKind.TaskIntermediate, "checkpoint.bin") == bytes(range(256)) * 4
    assert client.get_bytes(TaskOutputKind.TaskLog, "stdout.txt") == b"starting\ndone\n"
    assert json.loads(client.get_bytes(TaskOutputKind.custom("Metrics"), "metrics/run.json")) == {"frames": 1}

    target = tmp_path / "downloads" / "frame1.txt"
    client.download(TaskOutputKind.TaskOutput, "out/frame1.txt", target)
    assert target.read_text() == "full resolution frame"

    ref = client.get_output(TaskOutputKind.TaskIntermediate, "checkpoint.bin")
    assert isinstance(ref, OutputFile) and ref.size_bytes == 1024 and ref.last_modified is not None
    with pytest.raises(StorageNotFoundError):
        client.get_output(TaskOutputKind.TaskOutput, "missing.txt")
    with pytest.raises(StorageNotFoundError):
        client.get_bytes(TaskOutputKind.TaskOutput, "missing.txt")

    job = JobOutputStorage(backend.open(), job_id)
    assert [o.path for o in job.list_outputs(JobOutputKind.JobOutput)] == ["movie.txt"]
    assert job.get_bytes(JobOutputKind.JobOutput, "movie.txt") == b"merged movie"
    assert job.list_outputs(JobOutputKind.JobPreview) == []

    # the layout on the store itself is the .NET library's
    expected = {
        f"{task_id}/$TaskOutput/out/frame1.txt", f"{task_id}/$TaskPreview/frame1_preview.txt",
        f"{task_id}/$TaskLog/stdout.txt", f"{task_id}/$TaskIntermediate/checkpoint.bin",
        f"{task_id}/$TaskOutputExtra/extra.txt", f"{task_id}/$Metrics/metrics/run.json",
        "$JobOutput/movie.txt",
    }
    assert _names_in_container(backend, container) == expected
    assert outputs[0].url.endswith(f"/{container}/{task_id}/%24TaskOutput/out/frame1.txt")


def _readable_tail(job_id: str) -> str:
    # "Render_Job:<digits>" -> "render-job-<digits>" cut to 15 characters
    return "render-job-" + job_id.split(":", 1)[1][:4]


def _names_in_container(backend: Backend, container: str) -> set[str]:
    """Blob names as the store holds them, read without hpcbatch."""
    if backend.name == "azure":
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(backend.options["connection_string"])
        return {b.name for b in service.get_container_client(container).list_blobs()}
    root = Path(backend.url.removeprefix("file://")) / container
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_save_infers_the_path_from_the_working_directory(backend: Backend, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    wd = tmp_path / "wd"
    (wd / "File" / "Under").mkdir(parents=True)
    (wd / "File" / "Under" / "TestText2.txt").write_text("two")
    (tmp_path / "stdout.txt").write_text("out")
    monkeypatch.chdir(wd)
    outputs = TaskOutputStorage(backend.open(), _unique("job"), "test-task")

    saved = outputs.save(TaskOutputKind.TaskPreview, "File/Under/TestText2.txt")
    assert saved.path == "File/Under/TestText2.txt" and saved.size_bytes == 3
    outputs.save(TaskOutputKind.TaskLog, "../stdout.txt")
    outputs.save(TaskOutputKind.TaskPreview, str(wd / "File" / "Under" / "TestText2.txt"),
                 dest="File/In/The/Depths/TestText3.txt")
    assert [o.path for o in outputs.list_outputs(TaskOutputKind.TaskPreview)] == [
        "File/In/The/Depths/TestText3.txt", "File/Under/TestText2.txt"]
    assert [o.path for o in outputs.list_outputs(TaskOutputKind.TaskLog)] == ["stdout.txt"]

    # saving again replaces
    (wd / "File" / "Under" / "TestText2.txt").write_text("two, again")
    outputs.save(TaskOutputKind.TaskPreview, "File/Under/TestText2.txt")
    assert outputs.get_bytes(TaskOutputKind.TaskPreview, "File/Under/TestText2.txt") == b"two, again"

    with pytest.raises(StorageKeyError):
        outputs.save(TaskOutputKind.TaskOutput, str(wd / "File" / "Under" / "TestText2.txt"))
    with pytest.raises(StorageKeyError):
        outputs.save(TaskOutputKind.TaskOutput, "x.txt", dest="Under/../../../../escape.txt")
    with pytest.raises(StorageNotFoundError):
        outputs.save(TaskOutputKind.TaskOutput, "no-such-file.txt")
    assert outputs.delete(TaskOutputKind.TaskLog, "stdout.txt") is True
    assert outputs.delete(TaskOutputKind.TaskLog, "stdout.txt") is False
    assert outputs.list_outputs(TaskOutputKind.TaskLog) == []


def test_tasks_of_one_job_share_its_container(backend: Backend) -> None:
    job_id = _unique("shared")
    storage = backend.open()
    assert prepare_output_storage(storage, job_id) == job_output_container_name(job_id)
    a, b = TaskOutputStorage(storage, job_id, "a"), TaskOutputStorage(storage, job_id, "b")
    a.save_text(TaskOutputKind.TaskOutput, "from a", "result.txt")
    b.save_text(TaskOutputKind.TaskOutput, "from b", "result.txt")
    assert a.get_bytes(TaskOutputKind.TaskOutput, "result.txt") == b"from a"
    assert b.get_bytes(TaskOutputKind.TaskOutput, "result.txt") == b"from b"
    assert {o.key.split("/", 1)[0] for o in storage.list(job_output_container_name(job_id) + "/")} == {
        job_output_container_name(job_id)}


# --------------------------------------------------------------------------- tracked files


def _wait_for(predicate: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_save_tracked_appends_while_tracking_and_flushes_at_exit(backend: Backend, tmp_path: Path) -> None:
    outputs = TaskOutputStorage(backend.open(), _unique("tracked"), "test-task")
    log = tmp_path / "stdout.txt"  # need not exist when tracking starts

    def stored() -> bytes:
        return outputs.get_bytes(TaskOutputKind.TaskLog, "Tracked1.txt")

    with outputs.save_tracked(TaskOutputKind.TaskLog, str(log), interval_s=0.05,
                              dest="Tracked1.txt") as tracked:
        assert stored() == b""  # the stored copy exists from the start (EnsureExists)
        with open(log, "a") as f:
            f.write("Line 1\n")
        _wait_for(lambda: stored() == b"Line 1\n")      # a periodic append, not the exit
        with open(log, "a") as f:
            f.write("Line 2\n")
        _wait_for(lambda: stored() == b"Line 1\nLine 2\n")
        with open(log, "a") as f:
            f.write("Line 3\n")                            # left for the final flush
    assert stored() == log.read_bytes() == b"Line 1\nLine 2\nLine 3\n"
    assert tracked.flushed_bytes == len(log.read_bytes())
    assert tracked.flush_errors == []
    if backend.name == "azure":  # an append blob, as the .NET library makes
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(backend.options["connection_string"])
        props = service.get_blob_client(outputs.container_name, "test-task/$TaskLog/Tracked1.txt").get_blob_properties()
        assert props.blob_type == "AppendBlob"


def test_save_tracked_flushes_when_the_block_raises(backend: Backend, tmp_path: Path) -> None:
    outputs = TaskOutputStorage(backend.open(), _unique("tracked"), "test-task")
    log = tmp_path / "stderr.txt"
    log.write_text("before\n")
    # an hour between flushes: only the first tick and the exit can upload
    with (pytest.raises(RuntimeError, match="task failed"),
          outputs.save_tracked(TaskOutputKind.TaskLog, str(log), 3600.0, dest="stderr.txt")):
        time.sleep(0.2)
        with open(log, "a") as f:
            f.write("Traceback: task failed\n")
        raise RuntimeError("task failed")
    assert outputs.get_bytes(TaskOutputKind.TaskLog, "stderr.txt") == b"before\nTraceback: task failed\n"


def test_save_tracked_while_the_file_is_being_written(backend: Backend, tmp_path: Path) -> None:
    """IfATrackedFileIsIsUseWhenItIsDueToBeFlushed_ThenNoErrorOccursAndChangesArePersisted."""
    outputs = TaskOutputStorage(backend.open(), _unique("tracked"), "test-task")
    log = tmp_path / "busy.txt"
    log.touch()
    with (outputs.save_tracked(TaskOutputKind.TaskLog, str(log), 0.005, dest="Tracked2.txt") as tracked,
          open(log, "a") as f):
        for i in range(200):
            f.write(f"Line {i}\n")
            f.flush()
            time.sleep(0.002)
    assert outputs.get_bytes(TaskOutputKind.TaskLog, "Tracked2.txt") == log.read_bytes()
    assert tracked.flush_errors == []


def test_save_tracked_replaces_an_earlier_copy(tmp_path: Path) -> None:
    outputs = TaskOutputStorage(open_storage(tmp_path / "s"), "j", "t")
    outputs.save_text(TaskOutputKind.TaskLog, "old attempt\n", "stdout.txt")
    log = tmp_path / "stdout.txt"
    log.write_text("new attempt\n")
    with outputs.save_tracked(TaskOutputKind.TaskLog, str(log), 60.0, dest="stdout.txt"):
        pass
    assert outputs.get_bytes(TaskOutputKind.TaskLog, "stdout.txt") == b"new attempt\n"


def test_download_to_a_folder_names_the_folder_not_a_missing_output(tmp_path: Path) -> None:
    outputs = TaskOutputStorage(open_storage(tmp_path / "s"), "j", "t")
    outputs.save_text(TaskOutputKind.TaskOutput, "frame", "frame.txt")
    (tmp_path / "existing").mkdir()
    for folder in (tmp_path / "existing", f"{tmp_path / 'new'}/"):
        with pytest.raises(HpcbatchError) as info:
            outputs.download(TaskOutputKind.TaskOutput, "frame.txt", folder)
        assert not isinstance(info.value, StorageNotFoundError), info.value
        assert info.value.code == "InvalidLocalPath" and "is a folder" in info.value.message
    assert list((tmp_path / "existing").iterdir()) == []
    outputs.download(TaskOutputKind.TaskOutput, "frame.txt", tmp_path / "new" / "frame.txt")
    assert (tmp_path / "new" / "frame.txt").read_text() == "frame"


def test_save_tracked_reports_periodic_errors_and_retries(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "s")
    outputs = TaskOutputStorage(storage, "j", "t")
    log = tmp_path / "log.txt"
    log.write_text("a\n")
    failures: list[BaseException] = []
    real_append = storage.append_bytes
    broken = threading.Event()
    broken.set()

    def flaky_append(data: bytes, key: str, **kw: Any) -> None:
        if broken.is_set() and not kw.get("replace"):
            raise StorageNotFoundError("simulated outage")
        real_append(data, key, **kw)

    storage.append_bytes = flaky_append  # type: ignore[method-assign]
    with outputs.save_tracked(TaskOutputKind.TaskLog, str(log), 0.02, dest="log.txt",
                              on_flush_error=failures.append) as tracked:
        _wait_for(lambda: len(failures) >= 2)
        broken.clear()
        _wait_for(lambda: tracked.flushed_bytes == 2)
    assert tracked.flush_errors and all(isinstance(e, HpcbatchError) for e in tracked.flush_errors)
    assert outputs.get_bytes(TaskOutputKind.TaskLog, "log.txt") == b"a\n"


# --------------------------------------------------------------------------- from_environment


def test_from_environment_needs_the_task_variables(tmp_path: Path) -> None:
    env = storage_environment(str(tmp_path / "s"))
    with pytest.raises(StorageConfigurationError, match="AZ_BATCH_JOB_ID"):
        TaskOutputStorage.from_environment(env)
    with pytest.raises(StorageConfigurationError, match="AZ_BATCH_TASK_ID"):
        TaskOutputStorage.from_environment({**env, "AZ_BATCH_JOB_ID": "j"})
    with pytest.raises(StorageConfigurationError, match=ENV_STORAGE_URL):
        TaskOutputStorage.from_environment({"AZ_BATCH_JOB_ID": "j", "AZ_BATCH_TASK_ID": "t"})
    outputs = TaskOutputStorage.from_environment({**env, "AZ_BATCH_JOB_ID": "J", "AZ_BATCH_TASK_ID": "t"})
    assert (outputs.job_id, outputs.task_id, outputs.container_name) == ("J", "t", "job-j")
    assert JobOutputStorage.from_environment({**env, "AZ_BATCH_JOB_ID": "J"}).container_name == "job-j"


# =========================================================================== storage layer


def test_storage_keys_and_objects_on_memory_storage() -> None:
    storage = open_storage(f"memory://{_unique('mem')}")
    storage.put_bytes(b"abc", "c1/a/b.txt")
    storage.append_bytes(b"1", "c1/log")
    storage.append_bytes(b"2", "c1/log")
    storage.put_bytes(b"x", "c10/z")
    assert storage.get_bytes("c1/log") == b"12"
    assert [o.key for o in storage.list("c1/")] == ["c1/a/b.txt", "c1/log"]
    assert [o.key for o in storage.list("c1")] == ["c1/a/b.txt", "c1/log", "c10/z"]  # a string prefix
    assert [o.key for o in storage.list("c1/a/b")] == ["c1/a/b.txt"]
    assert storage.exists("c1/a/b.txt") and not storage.exists("c1/a") and not storage.exists("c2/x")
    assert storage.delete("c1") == 2  # whole segments: c10 stays
    assert [o.key for o in storage.list("")] == ["c10/z"]
    for bad in ("", "/c/x", "c//x", "c/../x", "c/./x", "c\\x"):
        with pytest.raises(StorageKeyError):
            storage.put_bytes(b"", bad)
    with pytest.raises(StorageKeyError):
        storage.put_bytes(b"", "container-only")
    with pytest.raises(StorageNotFoundError, match="c10/missing"):
        storage.get_bytes("c10/missing")


def test_local_storage_paths_and_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage = open_storage("relative/store")  # a plain, relative path
    assert storage.url == (tmp_path / "relative" / "store").as_uri()
    storage.put_bytes(b"x", "job-a/t/$TaskOutput/f.txt")
    assert (tmp_path / "relative/store/job-a/t/$TaskOutput/f.txt").read_bytes() == b"x"
    assert storage.url_for("job-a/t/$TaskOutput/f.txt") == (
        (tmp_path / "relative/store/job-a/t/$TaskOutput/f.txt").as_uri())
    assert open_storage(storage.url).get_bytes("job-a/t/$TaskOutput/f.txt") == b"x"
    assert storage.delete("job-a/t") == 1
    assert not (tmp_path / "relative/store/job-a/t").exists()
    # a write in progress (hidden temporary file) is not an object
    (tmp_path / "relative/store/job-a/.g.txt.hpcbatch-tmp-12-34").write_bytes(b"partial")
    assert [o.key for o in storage.list("job-a/")] == []
    assert default_storage_url(tmp_path / "state") == (tmp_path / "state" / "storage").as_uri()
    with pytest.raises(StorageConfigurationError, match="host"):
        open_storage("file://otherhost/x")
    (tmp_path / "afile").write_text("")
    with pytest.raises(StorageConfigurationError, match="not a folder"):
        open_storage(str(tmp_path / "afile"))


def test_unsupported_and_misconfigured_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StorageConfigurationError, match="unsupported scheme 'ftp'"):
        open_storage("ftp://example.invalid/x")
    for var in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME",
                "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(StorageConfigurationError, match="AZURE_STORAGE_CONNECTION_STRING"):
        open_storage("az://")
    assert isinstance(StorageConfigurationError("x"), HpcbatchError)


def test_storage_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert storage_environment("store") == {ENV_STORAGE_URL: (tmp_path / "store").as_uri()}

    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    env = storage_environment("az://", {"account_name": "acct", "account_key": "a2V5", "max_concurrency": 4})
    assert env == {ENV_STORAGE_URL: "az://", "AZURE_STORAGE_ACCOUNT_NAME": "acct",
                   "AZURE_STORAGE_ACCOUNT_KEY": "a2V5", ENV_STORAGE_OPTIONS: '{"max_concurrency": 4}'}
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=x;AccountKey=eQ==")
    assert storage_environment("az://")["AZURE_STORAGE_CONNECTION_STRING"] == "AccountName=x;AccountKey=eQ=="

    env = storage_environment("s3://bucket/prefix", {"key": "AK", "secret": "SK",
                                                     "endpoint_url": "http://127.0.0.1:9000"})
    assert env == {ENV_STORAGE_URL: "s3://bucket/prefix", "AWS_ACCESS_KEY_ID": "AK",
                   "AWS_SECRET_ACCESS_KEY": "SK",
                   ENV_STORAGE_OPTIONS: '{"endpoint_url": "http://127.0.0.1:9000"}'}
    s3 = open_storage_from_environment(env)  # s3fs connects lazily: nothing is contacted here
    assert s3.protocol in ("s3", "s3a") and s3.root == "bucket/prefix"
    assert s3.options["key"] == "AK" and s3.options["endpoint_url"] == "http://127.0.0.1:9000"

    with pytest.raises(StorageConfigurationError, match="not JSON"):
        storage_environment("memory://x", {"credential": object()})
    with pytest.raises(StorageConfigurationError, match=ENV_STORAGE_OPTIONS):
        open_storage_from_environment({ENV_STORAGE_URL: "memory://x", ENV_STORAGE_OPTIONS: "[1]"})


def test_azure_storage_through_the_environment(azurite_connection_string: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    env = storage_environment("az://", {"connection_string": azurite_connection_string})
    assert env == {ENV_STORAGE_URL: "az://", "AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string}
    storage = open_storage_from_environment(env)
    container = _unique("env-")
    storage.put_bytes(b"block", f"{container}/blob.txt")
    storage.append_bytes(b" + append", f"{container}/blob.txt")  # block blob -> append blob
    assert storage.get_bytes(f"{container}/blob.txt") == b"block + append"
    assert storage.url_for(f"{container}/blob.txt").startswith("http://127.0.0.1:")
    with pytest.raises(StorageKeyError, match="container name"):
        storage.put_bytes(b"", "Not_A_Container/x")
    assert storage.delete(container) == 1
    assert storage.list(container) == []

    # another process deletes a container this one already made: the next write makes it again
    other = open_storage("az://", {"connection_string": azurite_connection_string})
    gone = _unique("gone-")
    storage.put_bytes(b"1", f"{gone}/a")
    assert other.delete(gone) == 1
    storage.put_bytes(b"2", f"{gone}/a")
    storage.append_bytes(b"3", f"{gone}/a")
    assert other.get_bytes(f"{gone}/a") == b"23"
    other.delete(gone)

    inside = open_storage(f"az://{container}-root/prefix", {"connection_string": azurite_connection_string})
    inside.put_bytes(b"x", "Any_Folder/f.txt")  # inside one blob container: any folder name
    assert [o.key for o in inside.list("")] == ["Any_Folder/f.txt"]
    assert inside.url_for("Any_Folder/f.txt").endswith(f"/{container}-root/prefix/Any_Folder/f.txt")
