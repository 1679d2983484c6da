"""A ReFrame regression test of mpi4py's ping-pong on two hpcbatch nodes.

In the style of ReFrame's tutorial: a run-only test with a sanity pattern and
performance figures (bandwidth in MB/s and latency in us at 1 KiB messages)
with references per system. ``HPCBATCH_PYTHON`` names the Python with mpi4py
on the nodes (default ``python3``).
"""

import os

import reframe as rfm
import reframe.utility.sanity as sn
from reframe.core.builtins import performance_function, sanity_function


@rfm.simple_test
class Mpi4pyPingPongTest(rfm.RunOnlyRegressionTest):
    descr = "mpi4py ping-pong between two nodes of an hpcbatch pool"
    valid_systems = ["hpcbatch:login", "hpcbatch:pool"]  # noqa: RUF012 - ReFrame variables
    valid_prog_environs = ["builtin"]  # noqa: RUF012 - ReFrame variables
    executable = os.environ.get("HPCBATCH_PYTHON", "python3")
    executable_opts = ["-m", "mpi4py.bench", "pingpong", "-n", "4096", "-l", "200"]  # noqa: RUF012 - ReFrame variables
    num_tasks = 2
    num_tasks_per_node = 1
    time_limit = "5m"
    reference = {  # noqa: RUF012 - a ReFrame variable
        "hpcbatch": {
            "bandwidth": (1.0, -0.999, None, "MB/s"),
            "latency": (100.0, None, 99.0, "us"),
        },
    }

    @sanity_function
    def header_and_sizes(self):
        return sn.all([sn.assert_found(r"# MPI PingPong Test", self.stdout),
                       sn.assert_found(r"^\s*4096\s", self.stdout)])

    @performance_function("MB/s")
    def bandwidth(self):
        return sn.extractsingle(r"^\s*1024\s+(?P<bw>[0-9.]+)\s+\|", self.stdout, "bw", float)

    @performance_function("us")
    def latency(self):
        return sn.extractsingle(r"^\s*1024\s+[0-9.]+\s+\|\s+(?P<t>[0-9.eE+-]+)", self.stdout,
                                "t", float) * 1e6
