"""Account limits ("Batch service quotas and limits") and their checks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Quotas:
    """Account limits ("Batch service quotas and limits").

    Attributes
    ----------
    pools
        Pools in the account (Batch's default: 100).
    active_jobs_and_job_schedules
        Jobs not completed plus job schedules not completed (default: 300).
    dedicated_cores
        Cores (inventory ``cores``) that all pools' nodes may hold together;
        None: unlimited. A pool that would exceed it stops growing with the
        resize error ``AccountCoreQuotaReached``.
    """

    pools: int = 100
    active_jobs_and_job_schedules: int = 300
    dedicated_cores: int | None = None
