"""Clients: the Python SDK (BatchClient, LocalBatch), the hpcbatch CLI, the quickstart."""
