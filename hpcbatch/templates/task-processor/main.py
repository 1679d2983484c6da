"""Task processor: runs one task. Edit run(); the framework saves the outputs and sets the exit code.

Run as the command line of each task, for example::

    {"id": "frame-1", "commandLine": "python3 /path/to/this/folder/main.py"}

Exit codes: what run() returns (0: success); 1 a TaskProcessorException (bad
parameters.json, an output that cannot be saved ...); 2 any other exception.
See README.md.
"""

import shlex
import sys

from hpcbatch.conventions import TaskOutputKind
from hpcbatch.templates.task_processor import TaskProcessor, run_task_processor


class MyTaskProcessor(TaskProcessor):
    """Runs the task.

    Available here: ``self.parameters`` (parameters.json), ``self.job_id``,
    ``self.task_id``, ``self.working_dir`` (also the current directory),
    ``self.outputs`` (the task's output storage, or None), ``self.environment``.
    """

    # Saved after run() returns, by the Batch File Conventions, to the storage
    # the service gives every task (HPCBATCH_STORAGE_URL): glob patterns
    # relative to the working directory -> output kind. (The service itself
    # saves the task's stdout.txt and stderr.txt as TaskLog outputs.)
    outputs_to_save = {  # noqa: RUF012 - TaskProcessor reads it, never changes it
        "output.txt": TaskOutputKind.TaskOutput,
    }

    def run(self) -> int:
        """Run the task's program, wait for it, and return its exit code (0: success)."""
        # Your code for the task processor goes here.
        message = self.parameters.get("Message", "hello")
        command = f"echo {shlex.quote(f'{message} from task {self.task_id}')} > output.txt"
        return self.run_process(["/bin/sh", "-c", command])


if __name__ == "__main__":
    sys.exit(run_task_processor(MyTaskProcessor))
