"""Fixtures of the REST API tests: a service without hosts, and signed HTTP to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hpcbatch.api.server import ServiceThread
from tests.api.wire import Http
from tests.helpers import running_service


@pytest.fixture(scope="module")
def service_thread(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    """A running service (real store, real Dask) with no hosts."""
    with running_service(tmp_path_factory.mktemp("api")) as (_client, thread):
        yield thread


@pytest.fixture(scope="module")
def http(service_thread: ServiceThread) -> Http:
    """Signed requests to :func:`service_thread`."""
    runtime = service_thread.runtime
    assert runtime.credentials is not None
    return Http(runtime.endpoint, runtime.credentials.account_name, runtime.credentials.key)
