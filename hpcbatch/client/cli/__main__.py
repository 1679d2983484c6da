"""``python -m hpcbatch.client.cli``: the ``hpcbatch`` command line."""

from hpcbatch.client.cli import main

main()
