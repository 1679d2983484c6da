"""``python -m hpcbatch.campaigns.osu {allreduce,bcast}``: OSU-style collective latency sweeps.

Written with mpi4py after the OSU micro-benchmarks' ``osu_allreduce`` and
``osu_bcast``: for each message size from ``--min-size`` to ``--max-size``
bytes (doubling), ``--warmup`` untimed then ``--iterations`` timed
collectives, a barrier before each timed loop; every rank measures its mean
time per call and rank 0 prints the average, minimum and maximum over the
ranks, in microseconds, one line per size::

    # OSU-style MPI_Allreduce latency test (mpi4py), 4 ranks
    # Size          Avg Latency(us)     Min Latency(us)     Max Latency(us)  Iterations
    4                          3.21                3.02                3.40        1000

``allreduce`` sums ``float32`` arrays (sizes below 4 bytes are raised to 4);
``bcast`` broadcasts bytes from rank 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial

__all__ = ["main", "sizes"]


def sizes(min_size: int, max_size: int) -> list[int]:
    """Message sizes in bytes: ``min_size`` doubled up to ``max_size`` (inclusive).

    Raises
    ------
    ValueError
        ``min_size`` < 1 or > ``max_size``.

    Examples
    --------
    >>> sizes(4, 32)
    [4, 8, 16, 32]
    """
    if min_size < 1 or min_size > max_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
    out, s = [], min_size
    while s <= max_size:
        out.append(s)
        s *= 2
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep (under ``mpiexec``); return the exit status.

    Parameters
    ----------
    argv
        ``{allreduce,bcast} [--min-size B] [--max-size B] [--iterations N] [--warmup N]``.

    Returns
    -------
    int
        0.
    """
    parser = argparse.ArgumentParser(prog="python -m hpcbatch.campaigns.osu",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("collective", choices=["allreduce", "bcast"])
    parser.add_argument("-m", "--min-size", type=int, default=4, help="bytes (default 4)")
    parser.add_argument("-x", "--max-size", type=int, default=1 << 20,
                        help="bytes (default 1048576)")
    parser.add_argument("-i", "--iterations", type=int, default=1000)
    parser.add_argument("-w", "--warmup", type=int, default=100)
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0:
        parser.error("--iterations must be >= 1 and --warmup >= 0")
    try:
        size_list = sizes(max(args.min_size, 4 if args.collective == "allreduce" else 1),
                          args.max_size)
    except ValueError as exc:
        parser.error(str(exc))

    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    name = {"allreduce": "MPI_Allreduce", "bcast": "MPI_Bcast"}[args.collective]
    if rank == 0:
        sys.stdout.write(f"# OSU-style {name} latency test (mpi4py), {comm.Get_size()} ranks\n"
                         f"# {'Size':<12}{'Avg Latency(us)':>18}{'Min Latency(us)':>20}"
                         f"{'Max Latency(us)':>20}{'Iterations':>12}\n")
    for size in size_list:
        if args.collective == "allreduce":
            send = np.ones(size // 4, dtype=np.float32)
            recv = np.empty_like(send)
            op = partial(comm.Allreduce, send, recv, op=MPI.SUM)
        else:
            op = partial(comm.Bcast, np.zeros(size, dtype=np.uint8), root=0)
        for _ in range(args.warmup):
            op()
        comm.Barrier()
        t0 = MPI.Wtime()
        for _ in range(args.iterations):
            op()
        mine = (MPI.Wtime() - t0) / args.iterations * 1e6
        total = comm.reduce(mine, op=MPI.SUM, root=0)
        low = comm.reduce(mine, op=MPI.MIN, root=0)
        high = comm.reduce(mine, op=MPI.MAX, root=0)
        if rank == 0 and total is not None:
            sys.stdout.write(f"{size:<14d}{total / comm.Get_size():>18.2f}{low:>20.2f}"
                             f"{high:>20.2f}{args.iterations:>12d}\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
