"""``python -m hpcbatch.mpihello``: the MPI hello demo (see :mod:`hpcbatch.testing.mpihello`)."""

import runpy

runpy.run_module("hpcbatch.testing.mpihello", run_name="__main__")
