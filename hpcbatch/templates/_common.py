"""What the job manager and task processor frameworks share (the templates' ``Configuration.cs``).

Parameters (``parameters.json``), the command line, and reporting to
``stdout.txt`` / ``stderr.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from hpcbatch.batch.errors import HpcbatchError

PARAMETERS_FILE = "parameters.json"
"""The name both templates look for (the reference: "a resource file named ``parameters.json``")."""


class TemplateFrameworkError(HpcbatchError):
    """Base of :class:`JobManagerException` and :class:`TaskProcessorException`.

    An "expected" failure: the framework (or your code) knows what went wrong
    and says so; the program exits with the template's code ``1``.

    Parameters
    ----------
    message
        What failed, naming the file, task or property at fault.
    hint
        Where possible, how to resolve it ("suggestions for resolving the failure").
    code
        A Batch error code when the failure came from the service (``TaskExists``,
        ``JobCompleted``...).
    """

    code = "TemplateFrameworkError"
    status = 500

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None,
                 values: Mapping[str, str] | None = None) -> None:
        super().__init__(message, code=code, values=values)
        self.hint = hint

    def __str__(self) -> str:
        return self.message + (f" (hint: {self.hint})" if self.hint else "")


class Log:
    """Thread-safe line writer to the program's stdout (the task's ``stdout.txt``)."""

    def __init__(self, stream: TextIO, prefix: str) -> None:
        self.stream = stream
        self.prefix = prefix
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        with self._lock:
            self.stream.write(f"[{self.prefix}] {message}\n")
            self.stream.flush()


def parse_args(argv: Sequence[str] | None, prog: str, description: str,
               error: type[TemplateFrameworkError], *, job_id_option: bool,
               task_id_option: bool) -> tuple[argparse.Namespace, list[str]]:
    """Parse the framework's options; unknown arguments are returned for your code.

    Raises
    ------
    TemplateFrameworkError
        (of type ``error``) for a malformed option.
    """

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise error(f"bad command line: {message}", hint=self.format_usage().strip())

    parser = Parser(prog=prog, description=description)
    parser.add_argument("--parameters", type=Path, default=None, metavar="FILE",
                        help=f"the parameters file (default: {PARAMETERS_FILE} in the working "
                             "directory, else next to the program)")
    if job_id_option:
        parser.add_argument("--job-id", default=None,
                            help="the job (default: $AZ_BATCH_JOB_ID)")
    if task_id_option:
        parser.add_argument("--task-id", default=None,
                            help="the task (default: $AZ_BATCH_TASK_ID)")
    args, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    return args, rest


def program_dir(cls: type) -> Path | None:
    """The folder of the file that defines ``cls`` (your ``main.py``), if it has one."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    return Path(path).resolve().parent if path else None


def load_parameters(explicit: Path | None, search: Sequence[Path | None],
                    error: type[TemplateFrameworkError]) -> tuple[dict[str, Any], Path | None]:
    """Load ``parameters.json``: ``explicit``, else the first found in ``search`` folders.

    Parameters
    ----------
    explicit
        A file named on the command line; it must exist.
    search
        Folders to look in, in order (the working directory, then the program's).

    Returns
    -------
    (dict, Path or None)
        The parameters (``{}`` when no file is found) and the file read.

    Raises
    ------
    TemplateFrameworkError
        (of type ``error``) the file cannot be read, is not JSON, or is not a
        JSON object.
    """
    path: Path | None = None
    if explicit is not None:
        path = explicit
    else:
        for folder in search:
            if folder is not None and (folder / PARAMETERS_FILE).is_file():
                path = folder / PARAMETERS_FILE
                break
    if path is None:
        return {}, None
    hint = (f"{PARAMETERS_FILE} must hold one JSON object, e.g. "
            '{"StartFrame": "1", "EndFrame": "100"}')
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read the parameters file {path}: {exc.strerror or exc}",
                    hint="give an existing file to --parameters" if explicit else None) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"the parameters file {path} is not valid JSON: {exc.msg} "
                    f"(line {exc.lineno}, column {exc.colno})", hint=hint) from exc
    if not isinstance(data, dict):
        raise error(f"the parameters file {path} holds a JSON {type(data).__name__}, "
                    "not an object", hint=hint)
    return data, path


def working_dir(env: Mapping[str, str]) -> Path:
    """``$AZ_BATCH_TASK_WORKING_DIR``, else the current directory."""
    wd = env.get("AZ_BATCH_TASK_WORKING_DIR")
    return Path(wd) if wd else Path(os.getcwd())


def report_expected(exc: TemplateFrameworkError, what: str, exit_code: int, out: TextIO,
                    err: TextIO) -> None:
    """Write an expected failure: one line to stdout, message and hint to stderr."""
    code = (f" [{exc.code}]" if exc.code and exc.code != type(exc).code
            and exc.code not in exc.message else "")
    out.write(f"[{what}] failed (exit code {exit_code}): {exc.message}{code}\n")
    out.flush()
    err.write(f"error: {type(exc).__name__}{code}: {exc.message}\n")
    if exc.hint:
        err.write(f"hint: {exc.hint}\n")
    cause = exc.__cause__
    if (cause is not None and not isinstance(cause, (OSError, json.JSONDecodeError))
            and str(cause) not in exc.message):
        err.write(f"caused by: {type(cause).__name__}: {cause}\n")
    err.flush()


def report_unexpected(exc: BaseException, what: str, exit_code: int, out: TextIO,
                      err: TextIO) -> None:
    """Write an unexpected exception: its traceback to stdout and stderr."""
    text = "".join(traceback.format_exception(exc))
    out.write(f"[{what}] failed with an unexpected exception (exit code {exit_code}): "
              f"{type(exc).__name__}: {exc}\n{text}")
    out.flush()
    err.write(text)
    err.flush()
