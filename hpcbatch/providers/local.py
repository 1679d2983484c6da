"""The ``local`` node provider: compute nodes as processes on this machine.

The embedded default (:class:`hpcbatch.client.sdk.LocalBatch`): each node is a
process here with its own loopback address and root. :class:`LocalTransport`
runs commands with :mod:`subprocess`; :class:`LocalProvider` starts, checks
and stops node processes through it. No SSH is involved: MPI launchers reach
the other nodes through :mod:`hpcbatch.providers.locallaunch`, and there is no
pool trust to install.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from hpcbatch.batch.errors import NodeConnectionError
from hpcbatch.providers.base import (
    CommandResult,
    TransportBase,
    TransportProvider,
    decode,
)
from hpcbatch.providers.inventory import Host

__all__ = ["LocalProvider", "LocalTransport"]


class LocalTransport(TransportBase):
    """Run commands on this machine with :mod:`subprocess` (the ``local`` provider).

    Parameters
    ----------
    host
        The inventory host (its address is not used).
    """

    def __init__(self, host: Host) -> None:
        self.host = host

    def run(
        self, argv: Sequence[str], *, timeout_s: float = 60.0, stdin: bytes | None = None
    ) -> CommandResult:
        """Run ``argv`` here; see :meth:`Transport.run`.

        A missing program gives exit code 127 and a non-executable one 126, as
        a shell on an SSH host would.
        """
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError:
            return CommandResult(127, "", f"{argv[0]}: command not found\n")
        except PermissionError:
            return CommandResult(126, "", f"{argv[0]}: permission denied\n")
        try:
            out, err = proc.communicate(stdin, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise NodeConnectionError(
                self.host.name, f"command {shlex.join(argv)} did not finish within {timeout_s:g} s"
            ) from None
        return CommandResult(proc.returncode, decode(out), decode(err))

    def spawn_detached(self, argv: Sequence[str], *, log_path: str) -> None:
        """Start ``argv`` here in its own session; see :meth:`Transport.spawn_detached`."""
        log = Path(log_path).expanduser()
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "wb") as out:
                subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            raise NodeConnectionError(
                self.host.name, f"cannot start {shlex.join(argv)}: {exc.strerror or exc}"
            ) from exc

    def close(self) -> None:
        """Nothing to release."""


class LocalProvider(TransportProvider):
    """Compute nodes as processes on this machine (``provider: local``).

    Pool trust is not needed (:meth:`install_trust` does nothing) and nobody
    logs in: MPI launchers start their proxies through
    :mod:`hpcbatch.providers.locallaunch` with the host's interpreter.
    """

    name: ClassVar[str] = "local"
    remote_login: ClassVar[bool] = False

    @classmethod
    def open_transport(cls, host: Host) -> LocalTransport:
        """Return a :class:`LocalTransport` (``host.address`` is not used)."""
        return LocalTransport(host)

    @property
    def local_launch_python(self) -> str:
        """The host's interpreter, which runs :mod:`hpcbatch.providers.locallaunch`."""
        return self.host.python


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started with ``start_new_session`` and its group, then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()
