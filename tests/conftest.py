"""Shared fixtures.

``testbed``: a session-wide SSH testbed of 3 real sshd daemons on 127.0.5.1-3
(see :mod:`hpcbatch.testing.testbed`), torn down at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hpcbatch.testing import testbed as _testbed


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_testbed.Testbed]:
    """A running 3-node SSH testbed on 127.0.5.1, 127.0.5.2, 127.0.5.3."""
    with _testbed.up(3, tmp_path_factory.mktemp("testbed"), base_address="127.0.5.1") as tb:
        yield tb
