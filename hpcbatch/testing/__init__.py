"""The SSH testbed (real sshd daemons on loopback) and demo MPI programs."""
