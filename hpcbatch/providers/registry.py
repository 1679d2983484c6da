"""The one place a host's provider is chosen: :data:`PROVIDERS`, keyed by ``Host.provider``.

Nothing else in hpcbatch tests a provider's name: the pool manager asks the
provider object what it needs (trust, MPI launchers, remote login).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hpcbatch.batch.errors import InvalidPropertyValueError
from hpcbatch.providers.base import NodeProvider, Transport, TransportProvider
from hpcbatch.providers.inventory import Host
from hpcbatch.providers.local import LocalProvider
from hpcbatch.providers.simulated import SimulatedProvider
from hpcbatch.providers.ssh import SshProvider

__all__ = ["PROVIDERS", "offers_remote_login", "open_transport", "provider_class", "provider_for"]

PROVIDERS: Mapping[str, type[TransportProvider]] = {
    cls.name: cls for cls in (SshProvider, LocalProvider, SimulatedProvider)
}
"""Provider classes by :attr:`Host.provider <hpcbatch.providers.inventory.Host.provider>` value."""


def provider_class(name: str) -> type[TransportProvider]:
    """Return the provider class serving ``Host.provider == name``.

    Parameters
    ----------
    name
        A provider name (``ssh``, ``local``, ``simulated``).

    Returns
    -------
    type
        The :class:`~hpcbatch.providers.base.NodeProvider` subclass.

    Raises
    ------
    InvalidPropertyValueError
        No provider has that name (the message lists the valid ones).
    """
    try:
        return PROVIDERS[name]
    except KeyError:
        raise InvalidPropertyValueError(
            "provider", name, "valid providers are " + ", ".join(sorted(PROVIDERS))) from None


def provider_for(host: Host) -> NodeProvider:
    """Return a new provider for ``host`` (it connects on first use).

    Parameters
    ----------
    host
        The inventory host; its ``provider`` field picks the class.

    Returns
    -------
    NodeProvider
        An :class:`~hpcbatch.providers.ssh.SshProvider` or a
        :class:`~hpcbatch.providers.local.LocalProvider`.
    """
    return provider_class(host.provider)(host)


def open_transport(host: Host) -> Transport:
    """Return a new transport to ``host``, of its provider's kind (connects lazily).

    Parameters
    ----------
    host
        The inventory host.

    Returns
    -------
    Transport
        An :class:`~hpcbatch.providers.ssh.SshTransport` or a
        :class:`~hpcbatch.providers.local.LocalTransport`.
    """
    return provider_class(host.provider).open_transport(host)


def offers_remote_login(host: Host | Mapping[str, Any]) -> bool:
    """Tell whether users can log in to a host over SSH ("Compute Node - Get Remote Login Settings").

    Parameters
    ----------
    host
        A :class:`Host`, or its dict form (``provider`` missing: the field's default).
    """
    name = host.provider if isinstance(host, Host) else (
        host.get("provider") or Host.model_fields["provider"].default)
    return provider_class(name).remote_login
