"""Batch File Conventions for task code: ``from hpcbatch.conventions import TaskOutputStorage``.

The public import path for tasks and job managers that persist their outputs
(the counterpart of Microsoft.Azure.Batch.Conventions.Files); the library
itself is :mod:`hpcbatch.storage.conventions`.
"""

from hpcbatch.storage.conventions import (
    JobOutputKind,
    JobOutputStorage,
    OutputFile,
    TaskOutputKind,
    TaskOutputStorage,
    TrackedFile,
    destination_path,
    job_output_container_name,
    job_output_prefix,
    prepare_output_storage,
    task_output_prefix,
)

__all__ = [
    "JobOutputKind",
    "JobOutputStorage",
    "OutputFile",
    "TaskOutputKind",
    "TaskOutputStorage",
    "TrackedFile",
    "destination_path",
    "job_output_container_name",
    "job_output_prefix",
    "prepare_output_storage",
    "task_output_prefix",
]
