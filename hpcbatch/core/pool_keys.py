"""Pool keys: the SSH key a pool's nodes share, so that MPI launchers reach each other.

A pool with ``enableInterNodeCommunication`` gets a key pair at creation (kept
in its row). Each node that joins installs the private key under its node root
and the public key in its task user's ``authorized_keys``, restricted by a
``from=`` list to the addresses of the pool's nodes that hold the key; the list
follows the pool's membership (:meth:`PoolKeys.sync`), and a node that leaves
loses both keys (:meth:`PoolKeys.revoke`). ``docs/security.md`` states the
promise; the hosts' side is :meth:`hpcbatch.providers.base.NodeProvider.launch`,
``update_trust`` and ``revoke_trust``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import TYPE_CHECKING

from hpcbatch.batch import identity
from hpcbatch.batch.errors import HpcbatchError
from hpcbatch.core.node_runtime import NodeRuntime
from hpcbatch.providers.base import Launched, TrustSpec

if TYPE_CHECKING:
    from hpcbatch.core.pool_manager import PoolManager

log = logging.getLogger(__name__)


def source_addresses(address: str) -> tuple[str, ...]:
    """The addresses a node connects to its peers from, for its pool key's ``from=`` lists.

    An IP address is itself; a host name is itself and what it resolves to
    here (sshd matches names only with ``UseDNS yes``). Blocking (DNS).

    Parameters
    ----------
    address
        The node's effective SSH address (an ssh config alias's ``HostName``:
        :meth:`NodeRuntime.effective_address`).

    Returns
    -------
    tuple of str
        The address first, then its resolved IP addresses, sorted.
    """
    try:
        ipaddress.ip_address(address)
        return (address,)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(address, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return (address,)
    return (address, *sorted({str(info[4][0]) for info in infos}))


class PoolKeys:
    """The pools' SSH keys and which nodes hold them.

    Parameters
    ----------
    manager
        The pool manager: its nodes (:attr:`PoolManager.pools`) and their
        providers (:meth:`hpcbatch.core.node_provisioning.NodeProvisioner.provider`).

    Attributes
    ----------
    keys
        Per pool key: its ``(private key, authorized_keys line)``; a pool
        without inter-node communication has none.
    """

    def __init__(self, manager: PoolManager) -> None:
        self.manager = manager
        self.keys: dict[str, tuple[str, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def set_key(self, pool_key: str, ssh_key: tuple[str, str] | None) -> None:
        """Record a pool's key pair (None: keep what is known)."""
        if ssh_key:
            self.keys[pool_key] = ssh_key

    def forget(self, pool_key: str) -> None:
        """Drop a deleted pool's key pair."""
        self.keys.pop(pool_key, None)
        self._locks.pop(pool_key, None)

    def key_path(self, node: NodeRuntime) -> str | None:
        """Path of the pool's private key on ``node``, or None when the pool has no SSH trust."""
        if node.pool_key not in self.keys or not node.root_dir:
            return None
        return self.manager.provisioning.provider(node.host).pool_key_path(node.root_dir)

    def spec_for(self, node: NodeRuntime) -> TrustSpec | None:
        """What a starting node installs (blocking: DNS), or None for a pool without trust.

        Marks the node as a key holder: the ``from=`` lists of the others take
        its addresses at the next :meth:`sync`.
        """
        if node.pool_key not in self.keys:
            return None
        private, public = self.keys[node.pool_key]
        node.trust_addresses = source_addresses(node.effective_address())
        node.trusted = True
        return TrustSpec(private, public, self._allowed_from(node.pool_key),
                         identity.POOL_AUTO_USER)

    @staticmethod
    def record(node: NodeRuntime, spec: TrustSpec, launched: Launched) -> None:
        """Keep on ``node`` what its host reported of the installed trust."""
        node.trust_user = launched.trust_user
        if launched.trust is not None:
            node.host_key, node.ssh_user = launched.trust.host_key, launched.trust.user
            node.trust_from = spec.allowed_from

    def _allowed_from(self, pool_key: str) -> tuple[str, ...]:
        """The ``from=`` list of a pool's key: the addresses of its nodes that hold the key."""
        return tuple(sorted({a for n in self.manager.pools.get(pool_key, {}).values()
                             if n.trusted for a in n.trust_addresses or (n.effective_address(),)}))

    async def sync(self, pool_key: str) -> None:
        """Bring every key-holding node's ``from=`` list to the pool's current membership.

        Called after a node installed the pool key and after a node left; one
        command per node whose list differs (joins that come together share a pass).

        Parameters
        ----------
        pool_key
            The pool (lower-cased ID).
        """
        if pool_key not in self.keys:
            return
        lock = self._locks.setdefault(pool_key, asyncio.Lock())
        async with lock:
            allowed = self._allowed_from(pool_key)
            stale = [n for n in self.manager.pools.get(pool_key, {}).values()
                     if n.trusted and n.trust_from is not None and n.trust_from != allowed]
            public = self.keys[pool_key][1]

            def update(node: NodeRuntime) -> None:
                try:
                    self.manager.provisioning.provider(node.host).update_trust(
                        public, allowed_from=allowed, user=node.trust_user)
                    node.trust_from = allowed
                except HpcbatchError as exc:
                    log.warning("cannot update the pool key on host %s: %s", node.host.name, exc)

            await asyncio.gather(*(asyncio.to_thread(update, n) for n in stale))

    def revoke(self, node: NodeRuntime) -> None:
        """Remove the pool key and the private key copy from a node leaving the pool.

        Blocking (SSH): run it in a thread. A host that cannot be reached is logged.
        """
        node.trusted = False
        if node.pool_key not in self.keys:
            return
        node.trust_from = None
        try:
            self.manager.provisioning.provider(node.host).revoke_trust(
                self.keys[node.pool_key][1], root_dir=node.root_dir, user=node.trust_user)
        except HpcbatchError as exc:
            log.warning("cannot revoke the pool key on host %s: %s", node.host.name, exc)
