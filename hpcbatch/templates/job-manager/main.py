"""Job manager: splits a job into tasks. Edit split(); the framework adds the tasks to the job.

Run as a job's job manager task, for example::

    "jobManagerTask": {"id": "jobmanager",
                       "commandLine": "python3 /path/to/this/folder/main.py",
                       "killJobOnCompletion": false,
                       "authenticationTokenSettings": {"access": ["job"]}}
    "onAllTasksComplete": "terminatejob"

Exit codes: 0 all tasks added; 1 a JobManagerException (the service rejected a
task, no job ID or credentials, bad parameters.json ...); 2 any other exception.
See README.md.
"""

import sys
from collections.abc import Iterator

from hpcbatch.templates.job_manager import JobSplitter, run_job_manager


class MyJobSplitter(JobSplitter):
    """Splits the job into tasks.

    Available here: ``self.parameters`` (parameters.json), ``self.job_id``,
    ``self.job`` (the job), ``self.job_manager_task``, ``self.environment``,
    ``self.client``.
    """

    def split(self) -> Iterator[dict[str, str]]:
        """Yield the tasks of the job; each is added to the job as soon as possible.

        Yield Batch task JSON (any "Add a task" property) or an
        ``hpcbatch.batch.models.TaskSpec``. Task IDs must be unique. Returning early is
        success; raising JobManagerException exits 1, any other exception 2 --
        either way the tasks yielded so far run.
        """
        # Your code for the split logic goes here.
        start_frame = int(self.parameters["StartFrame"])
        end_frame = int(self.parameters["EndFrame"])

        for i in range(start_frame, end_frame + 1):
            yield {"id": f"myTask{i}", "commandLine": f"/bin/echo rendering frame {i}"}


if __name__ == "__main__":
    sys.exit(run_job_manager(MyJobSplitter))
