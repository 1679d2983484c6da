"""Storage (fsspec URLs) and Batch File Conventions outputs."""
