"""The service split by Batch resource, the dispatcher, scheduling policy, pool manager."""
