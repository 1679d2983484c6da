"""The Dask engine, the node process and agent, environment, multi-instance, MPI."""
