"""``python -m hpcbatch.mpihello``: an mpi4py hello used by the quickstart, tests and benchmarks.

Rank 0 prints one JSON line per rank.

Each rank reports its rank, the world size, the node it runs on (the address
its sshd session came in on, which is the node's address on the SSH testbed;
the address hpcbatch.providers.locallaunch started it for, on local nodes; else the
processor name) and the result of an allreduce of rank+1.
"""

import json
import os

from mpi4py import MPI

comm = MPI.COMM_WORLD
conn = os.environ.get("SSH_CONNECTION", "").split()
address = (conn[2] if len(conn) == 4
           else os.environ.get("HPCBATCH_LAUNCH_HOST") or MPI.Get_processor_name())
total = comm.allreduce(comm.rank + 1, op=MPI.SUM)
lines = comm.gather(json.dumps({"rank": comm.rank, "size": comm.size, "address": address,
                                "sum": total}), root=0)
if comm.rank == 0:
    assert lines is not None  # the root gathers every rank's line
    print("\n".join(lines), flush=True)
