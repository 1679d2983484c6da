"""hpcbatch: Azure Batch's programming model on machines reachable over SSH, run by Dask.

The public entry points are :class:`BatchClient` (a client of a running service)
and :class:`LocalBatch` (a service in this process on local nodes). They are
imported on first use, so ``import hpcbatch.mpihello`` in an MPI rank or the
node agent in a worker does not pay for the SDK's imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.version import __version__ as __version__

if TYPE_CHECKING:
    from hpcbatch.client.local import LocalBatch
    from hpcbatch.client.sdk import BatchClient, BatchError

__all__ = ["BatchClient", "BatchError", "HpcbatchError", "LocalBatch"]


def __getattr__(name: str) -> Any:
    if name in ("BatchClient", "BatchError"):
        from hpcbatch.client import sdk

        return getattr(sdk, name)
    if name == "LocalBatch":
        from hpcbatch.client.local import LocalBatch

        return LocalBatch
    raise AttributeError(f"module 'hpcbatch' has no attribute {name!r}")
