"""Batch's request limits that clients need without the wire models.

:mod:`hpcbatch.batch.models` takes ~0.2 s to build; a client that only sends
requests (``create_tasks`` chunking its tasks) reads its limits here instead.
"""

from __future__ import annotations

__all__ = ["MAX_TASKS_PER_COLLECTION"]

MAX_TASKS_PER_COLLECTION = 100
"""Batch's limit of tasks in one ``addtaskcollection`` request ("Task - Add Collection")."""
