"""Node providers: start, check and stop compute nodes; pool trust; the inventory.

- :mod:`~hpcbatch.providers.base`: the :class:`NodeProvider` interface and the
  :class:`Transport` it is built on.
- :mod:`~hpcbatch.providers.ssh` (hosts over SSH) and
  :mod:`~hpcbatch.providers.local` (processes on this machine): the providers.
- :mod:`~hpcbatch.providers.registry`: the one place a host's provider is chosen.
- :mod:`~hpcbatch.providers.inventory`: the hosts; :mod:`~hpcbatch.providers.trust`:
  the pool's SSH key; :mod:`~hpcbatch.providers.locallaunch`: the MPI launchers'
  ``ssh`` on local nodes.

Importing this package imports none of them (the CLI reads the inventory
without loading paramiko).
"""
