"""Batch's Job Manager and Task Processor templates, for Python.

The Python counterparts of the "Azure Batch Job Manager with Job Splitter" and
"Azure Batch Task Processor" Visual Studio templates (reference:
azure-batch-docs-2017.txt, "Use Visual Studio project templates to jump-start
Batch solutions"). Each template has two parts:

* a framework, importable from the installed package --
  :mod:`hpcbatch.templates.job_manager` (:class:`JobSplitter`,
  :func:`run_job_manager`) and :mod:`hpcbatch.templates.task_processor`
  (:class:`TaskProcessor`, :func:`run_task_processor`): the template's
  ``Framework`` folder and ``Program.cs``, which you should not need to edit;
* a starter project, copied out with ``hpcbatch init job-manager DIR`` or
  ``hpcbatch init task-processor DIR`` (:func:`copy_template`): ``main.py``
  (the ``JobSplitter.cs`` / ``TaskProcessor.cs`` you edit), ``parameters.json``
  and ``README.md``.

Exit codes (the templates' tables, see each module): ``0`` success (a task
processor returns its application's exit code instead), ``1`` an "expected"
failure (:class:`JobManagerException` / :class:`TaskProcessorException`),
``2`` an unexpected exception.
"""

from __future__ import annotations

import shutil
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.templates.job_manager import (
    JobManagerException,
    JobManagerExitCode,
    JobSplitter,
    run_job_manager,
)
from hpcbatch.templates.task_processor import (
    TaskProcessor,
    TaskProcessorException,
    TaskProcessorExitCode,
    run_task_processor,
)

__all__ = [
    "TEMPLATE_NAMES",
    "JobManagerException",
    "JobManagerExitCode",
    "JobSplitter",
    "TaskProcessor",
    "TaskProcessorException",
    "TaskProcessorExitCode",
    "TemplateError",
    "copy_template",
    "run_job_manager",
    "run_task_processor",
    "template_files",
]

TEMPLATE_NAMES: tuple[str, ...] = ("job-manager", "task-processor")
"""The starter projects :func:`copy_template` knows (folders of this package)."""

_SKIP = ("__pycache__", ".pyc", ".pyo")


class TemplateError(HpcbatchError):
    """A starter project cannot be copied (unknown name, files in the way)."""

    code = "TemplateError"
    status = 400


def template_files(name: str) -> list[str]:
    """Return the files of starter project ``name``, relative to its folder, sorted.

    Parameters
    ----------
    name
        One of :data:`TEMPLATE_NAMES`.

    Raises
    ------
    TemplateError
        ``name`` is not a template, or the installed package lacks its files
        (package data missing from the build).
    """
    root = _template_root(name)
    files: list[str] = []

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            if child.name.startswith(".") or child.name.endswith(_SKIP):
                continue
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, rel + "/")
            else:
                files.append(rel)

    walk(root, "")
    if not files:
        raise TemplateError(f"template {name!r} has no files in this installation (is the "
                            "hpcbatch package data installed?)")
    return sorted(files)


def _template_root(name: str) -> Traversable:
    if name not in TEMPLATE_NAMES:
        raise TemplateError(f"unknown template {name!r}; choose one of {', '.join(TEMPLATE_NAMES)}",
                            values={"Template": str(name)})
    root = resources.files(__name__) / name
    if not root.is_dir():
        raise TemplateError(f"template {name!r} is missing from this installation (package data "
                            f"hpcbatch/templates/{name}/ was not installed)")
    return root


def copy_template(name: str, destination: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Copy starter project ``name`` into folder ``destination`` (``hpcbatch init``).

    Parameters
    ----------
    name
        ``"job-manager"`` or ``"task-processor"``.
    destination
        The folder; created (with parents) if missing. It may already hold
        other files.
    overwrite
        Replace files of the same name; without it nothing is copied when any
        would be replaced.

    Returns
    -------
    list of Path
        The files written, absolute.

    Raises
    ------
    TemplateError
        Unknown template; a file would be replaced and ``overwrite`` is False;
        ``destination`` exists and is not a folder.
    """
    root = _template_root(name)
    dest = Path(destination).expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise TemplateError(f"{dest} exists and is not a folder", values={"Path": str(dest)})
    files = template_files(name)
    clashes = [f for f in files if (dest / f).exists()]
    if clashes and not overwrite:
        raise TemplateError(
            f"{dest} already holds {', '.join(clashes)}; choose another folder or overwrite them "
            "(--force)", values={"Path": str(dest)})
    written: list[Path] = []
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        source = root.joinpath(*rel.split("/"))
        with resources.as_file(source) as src:
            shutil.copyfile(src, target)
        written.append(target)
    return written
