"""The REST API (Batch paths and JSON), SharedKey checks, TLS material, the server process."""
