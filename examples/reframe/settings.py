"""ReFrame configuration: a system whose partitions run on an hpcbatch pool.

Run from this folder (the service found as by the ``hpcbatch`` command)::

    HPCBATCH_POOL_ID=bench reframe -C settings.py -c mpi4py_pingpong.py -r --performance-report

* ``hpcbatch:login`` -- ReFrame runs the job script here (the ``local``
  scheduler); each parallel launch is a multi-instance task on the pool
  (the ``hpcbatch`` launcher: ``hpcbatch mpi run``);
* ``hpcbatch:pool`` -- the whole job script is a multi-instance task on the
  pool (the ``hpcbatch`` scheduler); MPICH's plain ``mpiexec`` finds the
  task's hosts.
"""

import os

import hpcbatch.client.reframe_backend  # noqa: F401 - registers the 'hpcbatch' launcher and scheduler

POOL = os.environ.get("HPCBATCH_POOL_ID", "bench")

site_configuration = {
    "systems": [{
        "name": "hpcbatch",
        "descr": f"hpcbatch pool {POOL}",
        "hostnames": [".*"],
        "modules_system": "nomod",
        "partitions": [
            {"name": "login", "descr": "parallel launches as multi-instance tasks",
             "scheduler": "local", "launcher": "hpcbatch", "access": [f"--pool-id={POOL}"],
             "environs": ["builtin"], "max_jobs": 1},
            {"name": "pool", "descr": "job scripts as multi-instance tasks",
             "scheduler": "hpcbatch", "launcher": "mpiexec", "access": [f"--pool-id={POOL}"],
             "environs": ["builtin"], "max_jobs": 1},
        ],
    }],
    "environments": [{"name": "builtin", "cc": "cc", "cxx": "", "ftn": ""}],
}
