"""The Task Processor template's framework: run a task's work, save its outputs, return its exit code.

The Python counterpart of "Azure Batch Task Processor" (reference:
azure-batch-docs-2017.txt, "Use Visual Studio project templates to jump-start
Batch solutions", section "Task Processor template"). You subclass
:class:`TaskProcessor` and write :meth:`TaskProcessor.run`, which typically
starts a program (:meth:`TaskProcessor.run_process`), waits for it, and
returns its exit code; :func:`run_task_processor` (the template's
``Program.cs`` and ``Configuration.cs``) does the rest:

1. reads ``parameters.json`` (``--parameters FILE``, else the task's working
   directory -- where a resource file named ``parameters.json`` lands -- else
   the folder of your ``main.py``), the job and task IDs (``AZ_BATCH_JOB_ID``,
   ``AZ_BATCH_TASK_ID``) and the working directory
   (``AZ_BATCH_TASK_WORKING_DIR``);
2. opens the task's output storage by the Batch File Conventions
   (:class:`hpcbatch.conventions.TaskOutputStorage`) when the task was given a
   storage (``HPCBATCH_STORAGE_URL``), as :attr:`TaskProcessor.outputs`;
3. calls ``run()``, then saves the outputs declared in
   :attr:`TaskProcessor.outputs_to_save` through the conventions;
4. exits with ``run()``'s return value, or the template's error code.

Exit codes (reference, "Exit codes and exceptions in the Task Processor template"):

================  ============================================================
code              meaning
================  ============================================================
Process.ExitCode  The task processor ran to completion: the value ``run()``
                  returned (typically the exit code of the program it
                  invoked; 0 means it succeeded). Only returned when the
                  declared outputs were also saved without an exception.
1                 The task processor failed with an exception in an 'expected'
                  part of the program: a :class:`TaskProcessorException`, with
                  diagnostic information and, where possible, a hint. Raised by
                  the framework when ``parameters.json`` is not a JSON object,
                  the output storage cannot be opened or an output cannot be
                  saved, or ``run()`` returns something other than an ``int``;
                  raise it yourself in ``run()`` for failures you can explain.
2                 The task processor failed with an 'unexpected' exception: any
                  other exception raised by ``run()`` (or the framework). Its
                  traceback is written to stdout (and stderr).
================  ============================================================

If the program you invoke uses exit codes 1 and 2 itself, set
:attr:`TaskProcessor.expected_error_exit_code` and
:attr:`TaskProcessor.unexpected_error_exit_code` to distinctive codes (the
reference: "edit the exception cases in the Program.cs file").

Differences from the C# template: outputs can be declared
(:attr:`TaskProcessor.outputs_to_save`) and are saved by the framework --
after ``run()`` returns, and best-effort (errors only logged) after it
raised; parameters may be any JSON values (C#: strings only); the storage comes
from ``HPCBATCH_STORAGE_URL`` (and its credential variables) instead of
``LINKED_STORAGE_ACCOUNT`` / ``LINKED_STORAGE_KEY``.
"""

from __future__ import annotations

import enum
import glob
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TextIO

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.conventions import (
    OutputFile,
    TaskOutputKind,
    TaskOutputStorage,
    destination_path,
)
from hpcbatch.storage.fs import ENV_STORAGE_URL
from hpcbatch.templates._common import (
    Log,
    TemplateFrameworkError,
    load_parameters,
    parse_args,
    program_dir,
    report_expected,
    report_unexpected,
    working_dir,
)

__all__ = [
    "TaskProcessor",
    "TaskProcessorException",
    "TaskProcessorExitCode",
    "run_task_processor",
]

_WHAT = "task processor"


class TaskProcessorExitCode(enum.IntEnum):
    """The Task Processor template's error exit codes (success is ``run()``'s return value)."""

    TASK_PROCESSOR_ERROR = 1
    """An 'expected' failure: a :class:`TaskProcessorException`."""
    UNEXPECTED_ERROR = 2
    """An 'unexpected' exception."""


class TaskProcessorException(TemplateFrameworkError):
    """An error that requires the task processor to terminate, with diagnostics (``TaskProcessorException``).

    The task processor exits with code 1 (:attr:`TaskProcessor.expected_error_exit_code`).

    Parameters
    ----------
    message
        What failed.
    hint
        How to resolve it, where known.
    code
        An error code, when one applies (a storage error's).
    """

    code = "TaskProcessorError"


class TaskProcessor:
    """Your task processor: subclass it and implement :meth:`run` (``TaskProcessor.cs``).

    The framework constructs it; to unit test ``run()``, construct it yourself.

    Parameters
    ----------
    parameters
        The task parameters, from ``parameters.json`` (``_parameters``).
    job_id, task_id
        The job and task IDs (``_jobId``, ``_taskId``); None outside Batch.
    working_dir
        The task's working directory (``AZ_BATCH_TASK_WORKING_DIR``).
    outputs
        The task's output storage (File Conventions), or None when the task
        was given no storage.
    environment
        The process environment (``_configuration``'s ``EnvironmentVariable``).
    argv
        Command-line arguments the framework did not consume.

    Attributes
    ----------
    outputs_to_save
        Class attribute: files to save after ``run()``, as ``{pattern: kind}``.
        A pattern is a path relative to the working directory and may use
        ``*``, ``?``, ``[...]`` and ``**``; a file is stored under its relative
        path with leading ``../`` removed (``"../stdout.txt"`` -> ``stdout.txt``),
        as an output of ``kind`` (a :class:`~hpcbatch.conventions.TaskOutputKind`
        or its name). Patterns that match no file are skipped, as Batch's
        ``outputFiles`` do. Example: ``{"out/*.png": TaskOutputKind.TaskOutput,
        "../stdout.txt": TaskOutputKind.TaskLog}``.
    expected_error_exit_code, unexpected_error_exit_code
        Class attributes: exit codes for a :class:`TaskProcessorException` (1)
        and for any other exception (2).
    saved_outputs
        The outputs saved so far by :meth:`save_outputs`.
    """

    outputs_to_save: ClassVar[Mapping[str, TaskOutputKind | str]] = {}
    expected_error_exit_code: ClassVar[int] = TaskProcessorExitCode.TASK_PROCESSOR_ERROR
    unexpected_error_exit_code: ClassVar[int] = TaskProcessorExitCode.UNEXPECTED_ERROR

    def __init__(self, *, parameters: Mapping[str, Any] | None = None,
                 job_id: str | None = None, task_id: str | None = None,
                 working_dir: str | os.PathLike[str] | None = None,
                 outputs: TaskOutputStorage | None = None,
                 environment: Mapping[str, str] | None = None,
                 argv: Sequence[str] = ()) -> None:
        self.parameters: dict[str, Any] = dict(parameters or {})
        self.job_id = job_id
        self.task_id = task_id
        self.working_dir = Path(working_dir) if working_dir is not None else Path.cwd()
        self.outputs = outputs
        self.environment: dict[str, str] = dict(environment or {})
        self.argv: list[str] = list(argv)
        self.saved_outputs: list[OutputFile] = []
        self._log: Log = Log(sys.stdout, _WHAT)

    def run(self) -> int:
        """Run the task: start the program, wait for it, save results, return its exit code.

        The framework calls it; it runs with the working directory as the
        current directory.

        Returns
        -------
        int
            The task's exit code (0: success), usually the invoked program's.

        Raises
        ------
        TaskProcessorException
            For a failure you can explain (exit code 1). Any other exception
            exits with code 2. To choose the code yourself, return it instead.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement run()")

    def run_process(self, command: str | Sequence[str], *, cwd: str | os.PathLike[str] | None = None,
                    env: Mapping[str, str] | None = None, timeout_s: float | None = None) -> int:
        """Run a program, its output going to the task's stdout/stderr; return its exit code.

        Parameters
        ----------
        command
            argv, or a command line split like a shell would (not run under a
            shell unless it invokes one, the Batch rule).
        cwd
            Its directory (default: the working directory).
        env
            Extra environment variables on top of this process's.
        timeout_s
            Kill it after this many seconds (raises ``subprocess.TimeoutExpired``).

        Returns
        -------
        int
            Its exit code; ``128 + N`` when it was killed by signal ``N``.

        Raises
        ------
        TaskProcessorException
            The program cannot be started (not found, not executable).
        """
        argv = shlex.split(command) if isinstance(command, str) else [os.fspath(a) for a in command]
        if not argv:
            raise TaskProcessorException("run_process() was given an empty command")
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            proc = subprocess.run(argv, cwd=os.fspath(cwd or self.working_dir),
                                  env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                                  timeout=timeout_s, check=False)
        except OSError as exc:
            raise TaskProcessorException(f"cannot start {argv[0]!r}: {exc.strerror or exc}",
                                         hint="check the program's path (resource files and "
                                              "application packages land under the task "
                                              "and node directories)") from exc
        return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode

    def save_outputs(self, *, best_effort: bool = False) -> list[OutputFile]:
        """Save the files matching :attr:`outputs_to_save` (the framework calls it after ``run()``).

        Parameters
        ----------
        best_effort
            Log failures instead of raising.

        Returns
        -------
        list of OutputFile
            The outputs saved by this call.

        Raises
        ------
        TaskProcessorException
            Outputs are declared but the task has no storage, or a save failed.
        """
        if not self.outputs_to_save:
            return []
        saved: list[OutputFile] = []
        try:
            if self.outputs is None:
                raise TaskProcessorException(
                    f"{type(self).__name__}.outputs_to_save declares outputs but the task has no "
                    f"output storage ({ENV_STORAGE_URL} is not set)",
                    hint=f"give the job a storage: commonEnvironmentSettings with {ENV_STORAGE_URL} "
                         "(see hpcbatch.storage.fs.storage_environment)")
            for pattern, kind in self.outputs_to_save.items():
                matches = sorted(glob.glob(os.path.join(glob.escape(str(self.working_dir)), pattern),
                                           recursive=True))
                files = [m for m in matches if os.path.isfile(m)]
                if not files:
                    self._log(f"no file matches output pattern {pattern!r}; nothing saved for it")
                for path in files:
                    rel = os.path.relpath(path, self.working_dir)
                    try:
                        out = self.outputs.save(kind, path, dest=destination_path(rel))
                    except (HpcbatchError, OSError) as exc:
                        raise TaskProcessorException(
                            f"cannot save output {rel} ({kind}): {exc}",
                            code=getattr(exc, "code", None)) from exc
                    saved.append(out)
                    self.saved_outputs.append(out)
                    self._log(f"saved {rel} as {kind} output {out.path} ({out.size_bytes} bytes)")
        except TaskProcessorException as exc:
            if not best_effort:
                raise
            self._log(f"could not save outputs: {exc}")
        return saved


def _output_storage(env: Mapping[str, str]) -> TaskOutputStorage | None:
    if not env.get(ENV_STORAGE_URL):
        return None
    try:
        return TaskOutputStorage.from_environment(env)
    except HpcbatchError as exc:
        raise TaskProcessorException(f"cannot open the task's output storage: {exc.message}",
                                     code=exc.code) from exc


def _run(processor_cls: type[TaskProcessor], argv: Sequence[str] | None,
         env: Mapping[str, str], out: TextIO) -> int:
    args, rest = parse_args(argv, prog=Path(sys.argv[0]).name or "main.py",
                            description=f"Task processor: {processor_cls.__name__}.run() runs "
                                        "the task.",
                            error=TaskProcessorException, job_id_option=False,
                            task_id_option=False)
    wd = working_dir(env)
    parameters, _ = load_parameters(args.parameters, [wd, program_dir(processor_cls)],
                                    TaskProcessorException)
    processor = processor_cls(parameters=parameters, job_id=env.get("AZ_BATCH_JOB_ID") or None,
                              task_id=env.get("AZ_BATCH_TASK_ID") or None, working_dir=wd,
                              outputs=_output_storage(env), environment=env, argv=rest)
    processor._log = Log(out, _WHAT)
    previous = os.getcwd()
    try:
        os.chdir(wd)
        try:
            code = processor.run()
        except BaseException:
            try:
                processor.save_outputs(best_effort=True)
            except Exception as exc:  # noqa: BLE001 - keep run()'s exception the one reported
                processor._log(f"could not save outputs: {type(exc).__name__}: {exc}")
            raise
        if isinstance(code, bool) or not isinstance(code, int):
            raise TaskProcessorException(
                f"{processor_cls.__name__}.run() returned {code!r}, not an exit code",
                hint="return the exit code as an int: 0 for success")
        processor.save_outputs()
    finally:
        os.chdir(previous)
    if not 0 <= code <= 255:
        processor._log(f"run() returned {code}; the operating system keeps only {code & 0xFF} "
                       "(exit codes are 0 to 255)")
    return code


def run_task_processor(processor_cls: type[TaskProcessor], argv: Sequence[str] | None = None, *,
                       env: Mapping[str, str] | None = None, stdout: TextIO | None = None,
                       stderr: TextIO | None = None) -> int:
    """Run a task processor as the task's program; return the task's exit code.

    The template's ``Program.Main``: use it as ``sys.exit(run_task_processor(MyProcessor))``.

    Parameters
    ----------
    processor_cls
        Your :class:`TaskProcessor` subclass.
    argv
        Command-line arguments (default ``sys.argv[1:]``): ``--parameters FILE``;
        others are passed on as :attr:`TaskProcessor.argv`.
    env
        The environment to read (default ``os.environ``): ``AZ_BATCH_JOB_ID``,
        ``AZ_BATCH_TASK_ID``, ``AZ_BATCH_TASK_WORKING_DIR``, ``HPCBATCH_STORAGE_URL``
        and its credential variables.
    stdout, stderr
        Where log lines and errors go (default ``sys.stdout`` / ``sys.stderr``).

    Returns
    -------
    int
        ``run()``'s return value when it and the saving of outputs succeeded;
        1 a :class:`TaskProcessorException`; 2 any other exception (the
        codes are ``processor_cls.expected_error_exit_code`` /
        ``unexpected_error_exit_code``).

    Raises
    ------
    TypeError
        ``processor_cls`` is not a :class:`TaskProcessor` subclass.
    """
    if not (isinstance(processor_cls, type) and issubclass(processor_cls, TaskProcessor)):
        raise TypeError(f"run_task_processor needs a TaskProcessor subclass, not {processor_cls!r}")
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    environment = dict(os.environ if env is None else env)
    try:
        return _run(processor_cls, argv, environment, out)
    except TaskProcessorException as exc:
        code = int(processor_cls.expected_error_exit_code)
        report_expected(exc, _WHAT, code, out, err)
        return code
    except Exception as exc:  # noqa: BLE001 - user code: any error is reported with its exit code
        code = int(processor_cls.unexpected_error_exit_code)
        report_unexpected(exc, _WHAT, code, out, err)
        return code
