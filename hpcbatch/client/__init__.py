"""Clients of an hpcbatch service; nothing here imports the service's stack.

- :mod:`.sdk`: :class:`BatchClient`, the Python SDK over the Batch REST API;
- :mod:`.transport`: its HTTP (``http.client``, kept-alive connections);
- :mod:`.auth`: SharedKey signing of outgoing requests (and ``SharedKeyAuth``
  for ``requests`` sessions);
- :mod:`.state`: finding a running service through its state dir;
- :mod:`.local`: :class:`LocalBatch`, a service in this process and its client
  (imports the service when entered);
- :mod:`.cli`: the ``hpcbatch`` command line, a module per command group;
- :mod:`.quickstart`: ``hpcbatch quickstart``.
"""
