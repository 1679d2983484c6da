"""``python -m hpcbatch.testing.mpipingpong``: an mpi4py ping-pong between ranks 0 and 1, for benchmarks.

Rank 0 sends a message to rank 1, which sends it back; ranks 2.. only join
the barriers. Each measurement is split into ``--blocks`` timed blocks and
reported as the median block and the best block (the best one is the least
disturbed by other load on the machine). Rank 0 prints one JSON object:

``latency``
    8-byte messages, ``--iterations`` round trips in all (after ``--warmup``):
    ``half_round_trip_us`` (median block) and ``half_round_trip_us_best``,
    the one-way latency in microseconds.
``bandwidth``
    per ``--sizes`` message size (bytes), ``max(blocks, bandwidth_bytes //
    size_bytes)`` round trips: ``MB_per_s`` (median block) and
    ``MB_per_s_best``, counting both directions:
    ``2 * size_bytes * round_trips / seconds / 1e6``.
``ranks``
    rank to the node it runs on (the address its sshd session came in on,
    as in :mod:`hpcbatch.mpihello`), to check that ranks 0 and 1 ran on
    different nodes.

Usage::

    mpiexec -hosts a,b -n 2 python -m hpcbatch.testing.mpipingpong --iterations 20000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from mpi4py import MPI

LATENCY_BYTES = 8


def _pingpong(comm: MPI.Comm, buf: bytearray, round_trips: int) -> float:
    """Seconds taken by ``round_trips`` ping-pongs of ``buf`` between ranks 0 and 1."""
    comm.Barrier()
    t0 = MPI.Wtime()
    if comm.rank == 0:
        for _ in range(round_trips):
            comm.Send(buf, dest=1, tag=1)
            comm.Recv(buf, source=1, tag=2)
    elif comm.rank == 1:
        for _ in range(round_trips):
            comm.Recv(buf, source=0, tag=1)
            comm.Send(buf, dest=0, tag=2)
    elapsed = MPI.Wtime() - t0
    comm.Barrier()
    return float(comm.bcast(elapsed, root=0))


def _blocks(comm: MPI.Comm, buf: bytearray, round_trips: int, blocks: int) -> list[float]:
    """Seconds per round trip of each of ``blocks`` timed blocks."""
    per = max(1, round_trips // blocks)
    return [_pingpong(comm, buf, per) / per for _ in range(blocks)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=20000, help="8-byte round trips timed")
    p.add_argument("--warmup", type=int, default=500, help="round trips before the timing")
    p.add_argument("--blocks", type=int, default=5, help="timed blocks per measurement")
    p.add_argument("--sizes", default="1048576,16777216",
                   help="bandwidth message sizes in bytes, comma-separated")
    p.add_argument("--bandwidth-bytes", type=int, default=256 << 20,
                   help="bytes sent each way per bandwidth size (sets its round trips)")
    args = p.parse_args(argv)
    comm = MPI.COMM_WORLD
    if comm.size < 2:
        raise SystemExit("mpipingpong needs at least 2 ranks")
    conn = os.environ.get("SSH_CONNECTION", "").split()
    address = (conn[2] if len(conn) == 4
               else os.environ.get("HPCBATCH_LAUNCH_HOST") or MPI.Get_processor_name())
    nodes = comm.gather(address, root=0)

    small = bytearray(LATENCY_BYTES)
    _pingpong(comm, small, args.warmup)
    lat = [s / 2 * 1e6 for s in _blocks(comm, small, args.iterations, args.blocks)]
    bandwidth = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        buf = bytearray(size)
        trips = max(args.blocks, args.bandwidth_bytes // size)
        _pingpong(comm, buf, 2)
        rates = [2 * size / s / 1e6 for s in _blocks(comm, buf, trips, args.blocks)]
        bandwidth.append({"size_bytes": size, "round_trips": trips,
                          "MB_per_s": statistics.median(rates), "MB_per_s_best": max(rates),
                          "blocks_MB_per_s": rates})
    if comm.rank == 0:
        print(json.dumps({
            "size": comm.size,
            "ranks": {str(r): a for r, a in enumerate(nodes or [])},
            "mpi_library": MPI.Get_library_version().splitlines()[0].strip(),
            "latency": {"size_bytes": LATENCY_BYTES, "round_trips": args.iterations,
                        "half_round_trip_us": statistics.median(lat),
                        "half_round_trip_us_best": min(lat), "blocks_us": lat},
            "bandwidth": bandwidth,
        }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
