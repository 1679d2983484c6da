"""Shared by the SDK scenario scripts; standard library only (it runs in the SDK venvs).

A scenario script is run as ``python sdk15_scenarios.py <scenario>`` with the
service named by environment variables:

``AZ_BATCH_ENDPOINT``, ``AZ_BATCH_ACCOUNT``, ``AZ_BATCH_KEY``
    The hpcbatch service, as an Azure Batch account URL, name and key.
``COMPAT_PREFIX``
    A prefix for pool and job IDs (one per SDK version, so runs never collide).
``COMPAT_VM_SIZE``
    An Azure VM size the inventory hosts carry as a label (``STANDARD_D2S_V3``).
``COMPAT_PYTHON``, ``COMPAT_MPIEXEC``
    The Python and ``mpiexec`` the nodes run the MPI program with.

The script prints one line ``COMPAT-RESULT {json}`` with what it observed;
the pytest side asserts on it. An exception prints ``COMPAT-ERROR`` and the
traceback, and the script exits 1.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from typing import Any

ENDPOINT = os.environ.get("AZ_BATCH_ENDPOINT", "")
ACCOUNT = os.environ.get("AZ_BATCH_ACCOUNT", "")
KEY = os.environ.get("AZ_BATCH_KEY", "")
PREFIX = os.environ.get("COMPAT_PREFIX", "compat")
VM_SIZE = os.environ.get("COMPAT_VM_SIZE", "STANDARD_D2S_V3")
PYTHON = os.environ.get("COMPAT_PYTHON", "python3")
MPIEXEC = os.environ.get("COMPAT_MPIEXEC", "mpiexec")


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str,
             interval_s: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns a truthy value; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def when(predicate: Callable[[Any], bool], fetch: Callable[[], Any]) -> Callable[[], Any]:
    """A :func:`wait_for` predicate: ``fetch()`` when ``predicate`` holds for it, else None."""
    def check() -> Any:
        value = fetch()
        return value if predicate(value) else None
    return check


def iso(value: datetime | None) -> str | None:
    """A datetime as ISO 8601 text (with its zone), None kept."""
    return value.isoformat() if value is not None else None


def enum(value: Any) -> Any:
    """An SDK enum member as its wire string (both SDKs' enums are ``str`` enums)."""
    return getattr(value, "value", value)


def max_overlap(intervals: list[tuple[Any, Any]]) -> int:
    """The largest number of ``(start, end)`` intervals open at one instant (times of
    any one comparable kind: datetimes, or seconds as floats)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda x: (x[0], x[1]))
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


class LogCounter(logging.Handler):
    """Counts log records whose message contains ``needle`` (e.g. the SDKs' chunk-halving)."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.count += 1


def main(scenarios: dict[str, Callable[[], dict[str, Any]]]) -> None:
    """Run the scenario named by ``sys.argv[1]`` and print its result line."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name not in scenarios:
        print(f"COMPAT-ERROR unknown scenario {name!r}; known: {', '.join(scenarios)}")
        sys.exit(2)
    try:
        result = scenarios[name]()
    except BaseException:  # noqa: BLE001 - report everything, then fail
        print("COMPAT-ERROR " + json.dumps({"traceback": traceback.format_exc()}), flush=True)
        sys.exit(1)
    print("COMPAT-RESULT " + json.dumps(result, default=str), flush=True)
