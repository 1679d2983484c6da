"""``python -m hpcbatch.node``: the compute node process (see :mod:`hpcbatch.execution.node`)."""

from hpcbatch.execution.node import main

if __name__ == "__main__":
    raise SystemExit(main())
